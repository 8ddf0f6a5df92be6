import type { bench } from "@darkbloom/provider";
import { describe, expect, it } from "vitest";
import { parseBatchedBench } from "./llama-cpp-tools.js";
import {
  BATCHED_BENCH,
  batchedBenchResult,
  checksOf,
  FULL_STACK,
  LLAMA_SERVER,
  type ModelRun,
  NATIVE,
} from "./report.js";

// Two measurement lines as llama-batched-bench --output-format jsonl prints them, among its logs.
const OUTPUT = `build: 1 (de3ff81) with cc
llama_model_loader: loaded meta data with 30 key-value pairs
{"n_kv_max": 1344, "n_batch": 2048, "n_ubatch": 512, "flash_attn": 0, "is_pp_shared": 0, "n_gpu_layers": -1, "n_threads": 2, "n_threads_batch": 2, "pp": 256, "tg": 64, "pl": 1, "n_kv": 320, "t_pp": 0.800000, "speed_pp": 320.000000, "t_tg": 2.560000, "speed_tg": 25.000000, "t": 3.360000, "speed": 95.238098}
{"n_kv_max": 1344, "n_batch": 2048, "n_ubatch": 512, "flash_attn": 0, "is_pp_shared": 0, "n_gpu_layers": -1, "n_threads": 2, "n_threads_batch": 2, "pp": 256, "tg": 64, "pl": 4, "n_kv": 1280, "t_pp": 3.200000, "speed_pp": 320.000000, "t_tg": 4.740741, "speed_tg": 54.000000, "t": 7.940741, "speed": 161.2}
{"broken": true
llama_perf_context_print: total time = 11000 ms
`;

function measurement(batch: number, fields: Partial<bench.BatchMeasurement>): bench.BatchMeasurement {
  return {
    batch,
    promptTokens: 256,
    completionTokens: 64 * batch,
    shortRows: 0,
    ttftMs: Number.NaN,
    prefillTokensPerSecond: Number.NaN,
    decodeTokensPerSecondPerRow: Number.NaN,
    decodeTokensPerSecondAggregate: Number.NaN,
    decodeTokensPerSecondSteady: Number.NaN,
    wallMs: Number.NaN,
    tokensPerSecondWall: Number.NaN,
    ...fields,
  };
}

function target(name: string, rows: bench.BatchMeasurement[]): bench.TargetResult {
  return { target: name, batches: rows.map((m) => ({ batch: m.batch, median: m, best: m, rounds: [m] })) };
}

describe("llama-batched-bench's figures", () => {
  it("reads only the measurement lines of its jsonl output", () => {
    const rows = parseBatchedBench(OUTPUT);
    expect(rows.map((r) => [r.pl, r.speed_pp, r.speed_tg])).toEqual([
      [1, 320, 25],
      [4, 320, 54],
    ]);
  });

  it("become an engine-shaped column: TTFT at the prompt phase's end, every row busy every step", () => {
    const rows = parseBatchedBench(OUTPUT);
    const result = batchedBenchResult([rows, rows.map((r) => ({ ...r, speed_tg: r.speed_tg * 2 }))]);
    const four = result.batches.find((b) => b.batch === 4);
    expect(four?.median).toMatchObject({
      ttftMs: 3200,
      prefillTokensPerSecond: 320,
      decodeTokensPerSecondSteady: 81,
      decodeTokensPerSecondPerRow: 20.25,
    });
    expect(four?.best.decodeTokensPerSecondSteady).toBe(108);
  });
});

describe("the issue's targets", () => {
  // llama-batched-bench above: batch 1 delivers 64 tokens in 3.36 s (19.05 tok/s, 52.50 ms a token),
  // batch 4 256 tokens in 7.94 s (32.24 tok/s).
  const run = (native: { steady: number[]; wall: number[] }, stack: number[]): ModelRun => ({
    shape: "tiny",
    sizeBytes: 1,
    threads: 1,
    contextSize: 1024,
    joins: [],
    engines: [
      target(
        NATIVE,
        [1, 4].map((b, i) =>
          measurement(b, {
            decodeTokensPerSecondSteady: native.steady[i],
            tokensPerSecondWall: native.wall[i],
          }),
        ),
      ),
      batchedBenchResult([parseBatchedBench(OUTPUT)]),
    ],
    stack: [
      target(LLAMA_SERVER, [
        measurement(1, { tokensPerSecondWall: 20 }),
        measurement(8, { tokensPerSecondWall: 60 }),
      ]),
      target(
        FULL_STACK,
        [1, 8].map((b, i) => measurement(b, { tokensPerSecondWall: stack[i] })),
      ),
    ],
  });

  it("pass when native keeps 95% of the limit, adds under 0.1 ms a token and the stack keeps up with llama-server", () => {
    const checks = checksOf(run({ steady: [24, 52], wall: [19.03, 31] }, [20, 61]), "median");
    expect(checks.map((c) => c.pass)).toEqual([true, true, true, true]);
    expect(checks[2]?.detail).toBe("52.549 - 52.500 = 0.049 ms/token");
  });

  it("fail on each shortfall, naming the batch", () => {
    const checks = checksOf(run({ steady: [24, 51], wall: [18.9, 30] }, [20, 59]), "median");
    expect(checks.map((c) => c.pass)).toEqual([false, false, false, false]);
    expect(checks[0]?.detail).toBe("batch 1: 0.96, batch 4: 0.94");
    expect(checks[1]?.detail).toBe("batch 1: 0.99, batch 4: 0.93");
    expect(checks[3]?.detail).toBe("batch 1: 1.00, batch 8: 0.98");
    expect(checks[0]?.name).toContain(BATCHED_BENCH);
  });
});
