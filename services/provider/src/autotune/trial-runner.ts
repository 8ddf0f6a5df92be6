/**
 * The real objective: the engine `serve` runs, driven in-process as `benchmark` drives it (raw-text
 * generations at temperature 0), on a fixed workload: `batch` rows of a `promptTokens` prompt and
 * `genTokens` completion tokens each, batch after batch until `trialSeconds` have passed. The model
 * is loaded (and warmed with one short batch) before the clock starts, so load time never counts as
 * TTFT. One engine is kept loaded for the current knob set; a different set loads a new one.
 */
import { fillerText } from "../bench/prompts.js";
import { median, type RowTiming, summarizeBatch } from "../bench/stats.js";
import { timedGeneration } from "../bench/target.js";
import { type Engine, EngineError, type GenerationRequest, type ModelFile } from "../engine/engine.js";
import type { Objective } from "./hill-climb.js";
import { type Knobs, knobsKey } from "./knobs.js";
import { formatGiB, type MemoryEstimator } from "./memory-fit.js";
import type { TrialOutcome } from "./trial-store.js";

/** What every trial runs. */
export interface Workload {
  promptTokens: number;
  genTokens: number;
  /** Rows submitted together: the target batch the objective is measured at. */
  batch: number;
  trialSeconds: number;
}

/** The workload as part of a trial key: a different workload is a different trial. */
export function workloadKey(w: Workload): string {
  return `p${w.promptTokens}g${w.genTokens}b${w.batch}t${w.trialSeconds}`;
}

export interface TrialRunnerOptions {
  /** Creates the engine for a knob set (the llama engine in production). */
  createEngine(knobs: Knobs): Engine;
  estimator: MemoryEstimator;
  memoryBudgetBytes: number;
  /** A batch that takes longer than this is cancelled and the trial is a timeout. */
  batchTimeoutMs: number;
}

/** Tokens a warm-up row generates. */
const WARMUP_TOKENS = 4;

let requestSeq = 0;

/** Words of filler text per prompt token (the engine reports the real count). */
const WORDS_PER_TOKEN = 0.75;

export class EngineTrialRunner implements Objective {
  private current: { key: string; engine: Engine } | undefined;

  constructor(
    private readonly model: ModelFile,
    private readonly workload: Workload,
    private readonly options: TrialRunnerOptions,
  ) {}

  async measure(knobs: Knobs): Promise<TrialOutcome> {
    const need = await this.options.estimator.need(this.model, knobs);
    if (need.bytes > this.options.memoryBudgetBytes) {
      return {
        exitReason: "oom",
        reason: `needs ${formatGiB(need.bytes)} for ${knobs.maxBatch} rows of ${need.contextSize} tokens; the budget is ${formatGiB(this.options.memoryBudgetBytes)}`,
      };
    }
    let loadMs: number | undefined;
    if (this.current?.key !== knobsKey(knobs)) {
      await this.release();
      const loaded = await this.load(knobs);
      if ("exitReason" in loaded) return loaded;
      loadMs = loaded.loadMs;
    }
    const engine = this.current?.engine as Engine;
    const started = performance.now();
    const rates: number[] = [];
    const ttfts: number[] = [];
    let completionTokens = 0;
    let batches = 0;
    try {
      do {
        const rows = await this.runBatch(engine, batches, this.workload.genTokens);
        const m = summarizeBatch(rows, this.workload.genTokens);
        rates.push(m.decodeTokensPerSecondAggregate);
        ttfts.push(m.ttftMs);
        completionTokens += m.completionTokens;
        batches++;
      } while (performance.now() - started < this.workload.trialSeconds * 1000);
    } catch (error) {
      await this.release();
      return failure(error);
    }
    return {
      exitReason: "ok",
      figures: {
        decodeTokensPerSecond: median(rates),
        ttftMs: median(ttfts),
        completionTokens,
        batches,
        loadMs,
      },
    };
  }

  /** Frees the loaded engine. */
  async release(): Promise<void> {
    const current = this.current;
    this.current = undefined;
    await current?.engine.close().catch(() => {});
  }

  private async load(knobs: Knobs): Promise<{ loadMs: number } | TrialOutcome> {
    let engine: Engine;
    try {
      engine = this.options.createEngine(knobs);
    } catch (error) {
      return { exitReason: "config_error", reason: (error as Error).message };
    }
    const started = performance.now();
    try {
      await engine.load(this.model);
      // The engine lowers a context that does not fit its budget: the knob would not be honoured.
      const limit = engine.contextLimit?.(this.model.id);
      const wanted = Math.min(knobs.maxContext, this.model.contextLength || knobs.maxContext);
      if (limit !== undefined && limit < wanted) {
        await engine.close().catch(() => {});
        return {
          exitReason: "oom",
          reason: `the engine lowered the context from ${wanted} to ${limit} tokens to fit memory`,
        };
      }
      const loadMs = performance.now() - started;
      this.current = { key: knobsKey(knobs), engine };
      await this.runBatch(engine, -1, WARMUP_TOKENS);
      return { loadMs };
    } catch (error) {
      await this.release();
      await engine.close().catch(() => {});
      return failure(error);
    }
  }

  /** One batch of the workload; `batchIndex` -1 is the warm-up. The same prompts for every trial. */
  private async runBatch(engine: Engine, batchIndex: number, genTokens: number): Promise<RowTiming[]> {
    const { batch, promptTokens } = this.workload;
    const words = Math.max(4, Math.ceil(promptTokens * WORDS_PER_TOKEN));
    const generations = Array.from({ length: batch }, (_, row) => {
      const request: GenerationRequest = {
        id: `autotune-${++requestSeq}`,
        model: this.model.id,
        // Distinct per row (no shared prefix to reuse), identical across trials (a fair comparison).
        input: { kind: "text", prompt: fillerText(((batchIndex + 1) % 64) * batch + row, words) },
        sampling: { temperature: 0, topP: 1, topK: 0, stop: [], maxTokens: genTokens },
      };
      return timedGeneration(engine, request);
    });
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        for (const g of generations) g.generation.cancel();
        reject(
          new TrialTimeout(`a batch took longer than ${Math.round(this.options.batchTimeoutMs / 1000)} s`),
        );
      }, this.options.batchTimeoutMs);
    });
    try {
      return await Promise.race([Promise.all(generations.map((g) => g.timing)), deadline]);
    } finally {
      clearTimeout(timer);
      // A cancelled generation settles on its own; its rejection is the timeout already reported.
      for (const g of generations) g.timing.catch(() => {});
    }
  }
}

class TrialTimeout extends Error {
  override readonly name = "TrialTimeout";
}

/** Out-of-memory as llama.cpp words it when an allocation fails. */
const OOM = /out of memory|failed to allocate|cannot allocate|insufficient memory|ENOMEM/i;

function failure(error: unknown): TrialOutcome {
  const message = (error as Error)?.message ?? String(error);
  if (error instanceof TrialTimeout) return { exitReason: "timeout", reason: message };
  if (error instanceof EngineError && error.code === "model_load_failed")
    return { exitReason: OOM.test(message) ? "oom" : "load_failed", reason: message };
  return { exitReason: OOM.test(message) ? "oom" : "engine_error", reason: message };
}
