/**
 * The native benchmark's figures: llama-batched-bench's measurements as a column beside the engines',
 * the joins, and the issue's targets checked on them. Pure: no clocks, no I/O.
 */
import { bench } from "@darkbloom/provider";
import type { BatchedBenchRow } from "./llama-cpp-tools.js";

/** Column names. */
export const DIRECT = "direct";
export const LLAMA_ENGINE = "engine";
export const NATIVE = "native";
export const BATCHED_BENCH = "llama-batched-bench";
export const LLAMA_SERVER = "llama-server";
export const FULL_STACK = "full stack";

export interface JoinResult {
  target: string;
  median: bench.JoinMeasurement;
  rounds: bench.JoinMeasurement[];
}

export interface ModelRun {
  shape: string;
  sizeBytes: number;
  threads: number;
  contextSize: number;
  /** direct, engine, native and llama-batched-bench, batch by batch. */
  engines: bench.TargetResult[];
  joins: JoinResult[];
  /** llama-server and the full stack, by concurrent requests. */
  stack: bench.TargetResult[];
}

/**
 * One llama-batched-bench measurement in the engines' terms. Its prompts are evaluated all together
 * before any decoding, so every row's first token comes at t_pp and every row decodes in every step:
 * the per-row rate is the batch rate over the rows, and "all rows busy" is the whole decode phase.
 */
export function batchedBenchMeasurement(row: BatchedBenchRow): bench.BatchMeasurement {
  return {
    batch: row.pl,
    promptTokens: row.pp,
    completionTokens: row.pl * row.tg,
    shortRows: 0,
    ttftMs: row.t_pp * 1000,
    prefillTokensPerSecond: row.speed_pp,
    decodeTokensPerSecondPerRow: row.speed_tg / row.pl,
    decodeTokensPerSecondAggregate: row.speed_tg,
    decodeTokensPerSecondSteady: row.speed_tg,
    wallMs: (row.t_pp + row.t_tg) * 1000,
    tokensPerSecondWall: (row.pl * row.tg) / (row.t_pp + row.t_tg),
  };
}

/** llama-batched-bench's runs (one per round, every batch size each) as a target's result. */
export function batchedBenchResult(runs: readonly (readonly BatchedBenchRow[])[]): bench.TargetResult {
  const batches = [...new Set(runs.flatMap((run) => run.map((row) => row.pl)))];
  return {
    target: BATCHED_BENCH,
    batches: batches.map((batch) => {
      const rounds = runs.flatMap((run) =>
        run.filter((row) => row.pl === batch).map(batchedBenchMeasurement),
      );
      return {
        batch,
        median: bench.medianMeasurement(rounds),
        best: bench.bestMeasurement(rounds),
        rounds,
      };
    }),
  };
}

type Field = keyof bench.BatchMeasurement;

function byBatch(
  results: readonly bench.TargetResult[],
  target: string,
  of: bench.RoundSummary,
  field: Field,
) {
  return new Map(
    results.find((r) => r.target === target)?.batches.map((b) => [b.batch, b[of][field]] as const) ?? [],
  );
}

/**
 * Milliseconds per completion token of one row at batch 1, over its whole wall time (submit to last
 * token): what a consumer waits per token, prompt included; token bursts cannot hide any of it.
 */
export function msPerToken(
  results: readonly bench.TargetResult[],
  target: string,
  of: bench.RoundSummary,
): number {
  return 1000 / (byBatch(results, target, of, "tokensPerSecondWall").get(1) ?? Number.NaN);
}

/** The targets on one model's run. */
export function checksOf(run: ModelRun, of: bench.RoundSummary): bench.TargetCheck[] {
  const checks: bench.TargetCheck[] = [];
  if (run.engines.length > 0) {
    for (const [field, what] of [
      ["decodeTokensPerSecondSteady", "decode, all rows busy"],
      ["tokensPerSecondWall", "tokens over wall time"],
    ] as const)
      checks.push(
        bench.overheadCheck(
          `${run.shape}: native >= 95% of llama-batched-bench (${what})`,
          byBatch(run.engines, NATIVE, of, field),
          byBatch(run.engines, BATCHED_BENCH, of, field),
          0.95,
        ),
      );
    const overhead = msPerToken(run.engines, NATIVE, of) - msPerToken(run.engines, BATCHED_BENCH, of);
    checks.push({
      name: `${run.shape}: native per-token overhead beyond llama.cpp's < 0.1 ms (batch 1, wall time per token)`,
      pass: overhead < 0.1,
      detail:
        `${msPerToken(run.engines, NATIVE, of).toFixed(3)} - ${msPerToken(run.engines, BATCHED_BENCH, of).toFixed(3)}` +
        ` = ${overhead.toFixed(3)} ms/token`,
    });
  }
  if (run.stack.length > 0) {
    checks.push(
      bench.overheadCheck(
        `${run.shape}: full stack >= llama-server (tokens over wall time at each concurrency)`,
        byBatch(run.stack, FULL_STACK, of, "tokensPerSecondWall"),
        byBatch(run.stack, LLAMA_SERVER, of, "tokensPerSecondWall"),
        1,
      ),
    );
  }
  return checks;
}

/** The joins side by side: the newcomer's TTFT and what the running rows felt. */
export function formatJoins(joins: readonly JoinResult[]): string {
  const rows: string[][] = [["target", "joining TTFT ms", "longest stall ms", "gap before ms", "prompt tok"]];
  for (const j of joins) {
    rows.push([
      j.target,
      j.median.ttftMs.toFixed(0),
      j.median.stallMs.toFixed(1),
      j.median.gapBeforeMs.toFixed(1),
      j.median.promptTokens.toFixed(0),
    ]);
  }
  return `${bench.alignColumns(rows)}\n`;
}
