/**
 * Runs benchmark targets side by side: the same prompts, batch by batch and round by round, the targets
 * interleaved (so a noisy stretch of a shared machine hits all of them alike), medians over the rounds.
 */
import type { Engine } from "../engine/engine.js";
import { type DirectTargetOptions, openDirectTarget } from "./direct-target.js";
import { PromptSet } from "./prompts.js";
import { type BatchMeasurement, bestMeasurement, medianMeasurement, summarizeBatch } from "./stats.js";
import { type BenchTarget, engineTarget, runBatch } from "./target.js";

export interface BenchShape {
  /** Prompt length per row in tokens (the real count is reported). Default 256. */
  promptTokens?: number;
  /** Completion tokens per row (greedy; a row may end earlier at end of generation). Default 64. */
  genTokens?: number;
  /** Batch sizes: rows submitted together. Default [1, 2, 4]. */
  batches?: readonly number[];
  /** Measurements per batch size and target; the median and the best are reported. Default 1. */
  rounds?: number;
}

export interface BenchRunOptions extends BenchShape {
  /** Where prompts come from; every target reads the same ones. */
  prompts: PromptSet;
  /** Progress lines (e.g. to stderr). */
  onProgress?: (line: string) => void;
  /**
   * Runs after each round (0-based), before the next: a reference measured outside the targets (a
   * program of its own) takes its rounds here, so that each of its rounds shares the minutes, and
   * so the machine's state, of the targets' round beside it.
   */
  afterRound?: (round: number) => Promise<void>;
}

export interface BatchResult {
  batch: number;
  /** Field-by-field median over the rounds. */
  median: BatchMeasurement;
  /** Field-by-field best over the rounds (highest rates, lowest times). */
  best: BatchMeasurement;
  rounds: BatchMeasurement[];
}

export interface TargetResult {
  target: string;
  batches: BatchResult[];
}

export const DEFAULT_SHAPE = { promptTokens: 256, genTokens: 64, batches: [1, 2, 4], rounds: 1 } as const;

/** Completion tokens of the warm-up run (one batch of the largest size). */
const WARMUP_TOKENS = 8;

function resolveShape(shape: BenchShape): Required<BenchShape> {
  return {
    promptTokens: shape.promptTokens ?? DEFAULT_SHAPE.promptTokens,
    genTokens: shape.genTokens ?? DEFAULT_SHAPE.genTokens,
    batches: shape.batches ?? DEFAULT_SHAPE.batches,
    rounds: shape.rounds ?? DEFAULT_SHAPE.rounds,
  };
}

/**
 * Warms every target up once (a batch of the largest size), then measures each batch size `rounds`
 * times on every target in turn. Prompt indexes are distinct per row, batch and round, and shared by
 * the targets.
 */
export async function runBenchmark(
  targets: readonly BenchTarget[],
  options: BenchRunOptions,
): Promise<TargetResult[]> {
  const { genTokens, batches, rounds } = resolveShape(options);
  const progress = options.onProgress ?? (() => {});
  const widest = Math.max(...batches);
  const warmup = Array.from({ length: widest }, (_, i) => options.prompts.get(1_000_000 + i).text);
  for (const target of targets) {
    progress(`warming up ${target.name}`);
    await runBatch(target, warmup, WARMUP_TOKENS);
  }
  const measured = new Map<string, Map<number, BatchMeasurement[]>>(
    targets.map((t) => [t.name, new Map(batches.map((b) => [b, []]))]),
  );
  let next = 0;
  for (let round = 0; round < rounds; round++) {
    for (const batch of batches) {
      const prompts = Array.from({ length: batch }, () => options.prompts.get(next++).text);
      for (const target of targets) {
        progress(`round ${round + 1}/${rounds}: ${target.name}, batch ${batch}`);
        const rows = await runBatch(target, prompts, genTokens);
        measured.get(target.name)?.get(batch)?.push(summarizeBatch(rows, genTokens));
      }
    }
    await options.afterRound?.(round);
  }
  return targets.map((t) => ({
    target: t.name,
    batches: batches.map((batch) => {
      const all = measured.get(t.name)?.get(batch) ?? [];
      return { batch, median: medianMeasurement(all), best: bestMeasurement(all), rounds: all };
    }),
  }));
}

/**
 * Benchmarks an engine on one of its models: TTFT, prefill and decode rates per batch size. The
 * engine needs `maxBatch` ≥ the largest batch and the model loaded (or known); prompts are built with
 * `prompts` (e.g. a direct target's tokenizer).
 */
export async function benchmarkEngine(
  engine: Engine,
  modelId: string,
  options: BenchRunOptions,
): Promise<BatchResult[]> {
  const [result] = await runBenchmark([engineTarget(engine, modelId)], options);
  return result?.batches ?? [];
}

/** The same figures with node-llama-cpp used directly on the model file (the baseline). */
export async function benchmarkDirect(
  modelPath: string,
  options: DirectTargetOptions & Omit<BenchRunOptions, "prompts"> & { prompts?: PromptSet },
): Promise<BatchResult[]> {
  const direct = await openDirectTarget(modelPath, options);
  try {
    const prompts = options.prompts ?? new PromptSet(direct.tokenizer, resolveShape(options).promptTokens);
    const [result] = await runBenchmark([direct], { ...options, prompts });
    return result?.batches ?? [];
  } finally {
    await direct.close();
  }
}

/** The benchmark's context size: the workload rounded up to a power of two, at least 1024 tokens. */
export function benchContextSize(promptTokens: number, genTokens: number): number {
  let size = 1024;
  while (size < promptTokens + genTokens + 16) size *= 2;
  return size;
}
