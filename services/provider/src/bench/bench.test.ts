/** The benchmark's pure parts: rate and percentile math, prompt building, SSE parsing, flags, the table. */
import { describe, expect, it } from "vitest";
import { BenchFlagError, batchesFlag, integerFlag } from "./flags.js";
import { formatComparison } from "./format.js";
import { SseParser } from "./http-target.js";
import { type BenchTokenizer, buildPrompt, fillerText, PromptSet } from "./prompts.js";
import { benchContextSize, type TargetResult } from "./run.js";
import {
  type BatchMeasurement,
  bestMeasurement,
  medianMeasurement,
  overheadCheck,
  percentile,
  type RowTiming,
  rate,
  scalingCheck,
  steadyRate,
  summarizeBatch,
} from "./stats.js";
import { spreadTokenTimes } from "./target.js";

describe("percentile", () => {
  it("interpolates between closest ranks and ignores non-finite values", () => {
    expect(percentile([3, 1, 2], 50)).toBe(2);
    expect(percentile([4, 1, 3, 2], 50)).toBe(2.5);
    expect(percentile([1, 2, 3, 4, 5], 0)).toBe(1);
    expect(percentile([1, 2, 3, 4, 5], 100)).toBe(5);
    expect(percentile([10, 20], 25)).toBe(12.5);
    expect(percentile([5, Number.NaN, 7], 50)).toBe(6);
    expect(percentile([], 50)).toBeNaN();
  });

  it("rate is tokens per second, NaN without tokens or time", () => {
    expect(rate(50, 2000)).toBe(25);
    expect(rate(0, 1000)).toBeNaN();
    expect(rate(10, 0)).toBeNaN();
  });
});

const row = (over: Partial<RowTiming>): RowTiming => ({
  promptTokens: 256,
  completionTokens: 65,
  startMs: 0,
  firstTokenMs: 500,
  lastTokenMs: 3_000,
  finishReason: "length",
  ...over,
});

describe("summarizeBatch", () => {
  it("measures one row: TTFT, prefill as prompt / TTFT, decode as tokens after the first / time after it", () => {
    const m = summarizeBatch([row({})], 65);
    expect(m.batch).toBe(1);
    expect(m.ttftMs).toBe(500);
    expect(m.prefillTokensPerSecond).toBeCloseTo(512); // 256 tokens in 0.5 s
    expect(m.decodeTokensPerSecondPerRow).toBeCloseTo(25.6); // 64 tokens in 2.5 s
    expect(m.decodeTokensPerSecondAggregate).toBeCloseTo(25.6);
    expect(m.wallMs).toBe(3_000);
    expect(m.tokensPerSecondWall).toBeCloseTo(65 / 3);
    expect(m.shortRows).toBe(0);
  });

  it("aggregates rows over the decode phase: first row's first token to last row's last token", () => {
    const m = summarizeBatch(
      [
        row({ firstTokenMs: 500, lastTokenMs: 2_500, completionTokens: 41 }), // 40 decode tokens in 2 s
        row({ firstTokenMs: 1_000, lastTokenMs: 5_500, completionTokens: 41 }), // 40 in 4.5 s
        row({ firstTokenMs: 1_500, lastTokenMs: 4_500, completionTokens: 21, finishReason: "stop" }),
      ],
      41,
    );
    expect(m.ttftMs).toBe(1_000);
    expect(m.prefillTokensPerSecond).toBeCloseTo((3 * 256) / 1.5);
    expect(m.decodeTokensPerSecondPerRow).toBeCloseTo(40 / 4.5); // median of 20, 8.9 and 6.7
    expect(m.decodeTokensPerSecondAggregate).toBeCloseTo(100 / 5);
    expect(m.completionTokens).toBe(103);
    expect(m.shortRows).toBe(1);
    expect(m.promptTokens).toBe(256);
  });

  it("counts the steady rate only while every row decodes, weighting events that carry several tokens", () => {
    const times = (from: number, step: number, n: number) =>
      Array.from({ length: n }, (_, i) => from + i * step);
    const rows = [
      // Row A decodes alone from 100 ms until row B's first token at 1000 ms, then both until 2000.
      row({
        startMs: 0,
        firstTokenMs: 100,
        lastTokenMs: 2_000,
        completionTokens: 20,
        tokenTimesMs: times(100, 100, 20),
      }),
      // Row B: 11 events for 21 tokens (two tokens per event after the first).
      row({
        startMs: 0,
        firstTokenMs: 1_000,
        lastTokenMs: 3_000,
        completionTokens: 21,
        tokenTimesMs: times(1_000, 200, 11),
      }),
    ];
    const m = summarizeBatch(rows, 21);
    // Window (1000, 2000]: A has tokens at 1100..2000 (10), B events at 1200..2000 (5) worth 2 each.
    expect(m.decodeTokensPerSecondSteady).toBeCloseTo((10 + 10) / 1);
    expect(m.decodeTokensPerSecondAggregate).toBeCloseTo((19 + 20) / 2.9);
    expect(steadyRate(rows, 2_000, 1_000)).toBeNaN();
    expect(summarizeBatch([row({})], 65).decodeTokensPerSecondSteady).toBeNaN(); // no token times
    const single = summarizeBatch(
      [
        row({
          firstTokenMs: 500,
          lastTokenMs: 1_500,
          completionTokens: 11,
          tokenTimesMs: times(500, 100, 11),
        }),
      ],
      11,
    );
    expect(single.decodeTokensPerSecondSteady).toBeCloseTo(single.decodeTokensPerSecondPerRow);
  });

  it("spreads an event's tokens over the time since the row's previous event", () => {
    const times: number[] = [];
    spreadTokenTimes(times, undefined, 100, 2); // the first event: no earlier time to spread over
    spreadTokenTimes(times, 100, 101, 1);
    spreadTokenTimes(times, 101, 109, 4); // text held back over four tokens
    expect(times).toEqual([100, 100, 101, 103, 105, 107, 109]);
    // A run held across the window's end counts inside it, where it was decoded: row A's 20 tokens
    // after its first arrive together at 30 ms, row B decodes one per ms from 10 to 20 ms.
    const held: number[] = [];
    spreadTokenTimes(held, undefined, 10, 1);
    spreadTokenTimes(held, 10, 30, 20);
    const a = row({
      startMs: 0,
      firstTokenMs: 10,
      lastTokenMs: 30,
      completionTokens: 21,
      tokenTimesMs: held,
    });
    const b = row({
      startMs: 0,
      firstTokenMs: 10,
      lastTokenMs: 20,
      completionTokens: 11,
      tokenTimesMs: Array.from({ length: 11 }, (_, i) => 10 + i),
    });
    // Window (10, 20]: ten tokens of each row in 10 ms.
    expect(summarizeBatch([a, b], 21).decodeTokensPerSecondSteady).toBeCloseTo(20 / 0.01);
  });

  it("a row without text leaves its rates out instead of failing", () => {
    const m = summarizeBatch(
      [row({ firstTokenMs: undefined, lastTokenMs: undefined, completionTokens: 0 })],
      8,
    );
    expect(m.ttftMs).toBeNaN();
    expect(m.decodeTokensPerSecondAggregate).toBeNaN();
    expect(() => summarizeBatch([], 8)).toThrow();
  });

  it("takes the median of every field over rounds", () => {
    const a = summarizeBatch([row({ firstTokenMs: 400 })], 65);
    const b = summarizeBatch([row({ firstTokenMs: 500 })], 65);
    const c = summarizeBatch([row({ firstTokenMs: 900 })], 65);
    const m = medianMeasurement([c, a, b]);
    expect(m.ttftMs).toBe(500);
    expect(m.decodeTokensPerSecondPerRow).toBe(b.decodeTokensPerSecondPerRow);
  });

  it("takes the best round per field: lowest times, highest rates, median workload", () => {
    const fast = summarizeBatch([row({ firstTokenMs: 400, lastTokenMs: 4_000 })], 65);
    const slow = summarizeBatch([row({ firstTokenMs: 900, lastTokenMs: 2_900, completionTokens: 41 })], 65);
    const best = bestMeasurement([fast, slow]);
    expect(best.ttftMs).toBe(400);
    expect(best.prefillTokensPerSecond).toBe(fast.prefillTokensPerSecond);
    expect(best.decodeTokensPerSecondPerRow).toBe(slow.decodeTokensPerSecondPerRow); // 40 in 2 s > 64 in 3.6 s
    expect(best.wallMs).toBe(2_900);
    expect(best.completionTokens).toBe(53);
  });
});

describe("target checks", () => {
  it("scaling: batch N aggregate over batch 1", () => {
    const agg = new Map([
      [1, 20],
      [4, 45],
    ]);
    expect(scalingCheck("x", agg, 4, 2)).toEqual({
      name: "x",
      pass: true,
      detail: "batch 4 / batch 1 = 2.25",
    });
    expect(scalingCheck("x", agg, 4, 2.5).pass).toBe(false);
    expect(scalingCheck("x", new Map([[1, 20]]), 4, 2)).toMatchObject({
      pass: false,
      detail: "batch 4 / batch 1 = -",
    });
  });

  it("overhead: every batch size must reach the share", () => {
    const engine = new Map([
      [1, 20],
      [2, 30],
    ]);
    expect(
      overheadCheck(
        "y",
        new Map([
          [1, 19.5],
          [2, 29],
        ]),
        engine,
        0.95,
      ),
    ).toEqual({ name: "y", pass: true, detail: "batch 1: 0.97, batch 2: 0.97" });
    expect(
      overheadCheck(
        "y",
        new Map([
          [1, 19.5],
          [2, 27],
        ]),
        engine,
        0.95,
      ).pass,
    ).toBe(false);
    expect(overheadCheck("y", new Map(), engine, 0.95).pass).toBe(false);
  });
});

/** Words are tokens; a BOS is added when `bos` is set. */
function wordTokenizer(bos = false): BenchTokenizer & { vocab: string[] } {
  const vocab: string[] = [];
  const id = (w: string) => {
    let i = vocab.indexOf(w);
    if (i < 0) i = vocab.push(w) - 1;
    return i;
  };
  return {
    vocab,
    tokenize: (text) => text.split(/\s+/).filter(Boolean).map(id),
    detokenize: (tokens) => tokens.map((t) => vocab[t]).join(" "),
    addedTokens: bos ? 1 : 0,
  };
}

describe("prompts", () => {
  it("builds prompts of exactly the target length when the tokenizer allows it", () => {
    const tok = wordTokenizer();
    for (const n of [1, 7, 256, 1000]) {
      const p = buildPrompt(tok, n, 3);
      expect(p.tokens).toBe(n);
      expect(tok.tokenize(p.text)).toHaveLength(n);
    }
  });

  it("counts the BOS the engine adds", () => {
    const p = buildPrompt(wordTokenizer(true), 64, 0);
    expect(p.tokens).toBe(64);
    expect(p.text.split(" ")).toHaveLength(63);
  });

  it("reports the real count when re-tokenizing cannot hit the target", () => {
    // Every pair of words merges into one token: odd targets are out of reach.
    const merging: BenchTokenizer = {
      tokenize: (text) => {
        const words = text.split(/\s+/).filter(Boolean);
        return Array.from({ length: Math.ceil(words.length / 2) }, (_, i) => i);
      },
      detokenize: (tokens) => tokens.map(() => "a b").join(" "),
      addedTokens: 0,
    };
    const p = buildPrompt(merging, 9, 0);
    expect(merging.tokenize(p.text).length).toBe(p.tokens);
    expect(Math.abs(p.tokens - 9)).toBeLessThanOrEqual(1);
  });

  it("is deterministic per index and distinct between indexes", () => {
    expect(fillerText(5, 40)).toBe(fillerText(5, 40));
    expect(fillerText(5, 40)).not.toBe(fillerText(6, 40));
    const set = new PromptSet(wordTokenizer(), 32);
    const texts = Array.from({ length: 20 }, (_, i) => set.get(i).text);
    expect(new Set(texts).size).toBe(20);
    // No two prompts share their first ten words (nothing a prefix cache could reuse).
    expect(new Set(texts.map((t) => t.split(" ").slice(0, 10).join(" "))).size).toBe(20);
    expect(set.get(3)).toBe(set.get(3));
  });

  it("sizes the benchmark context to the workload", () => {
    expect(benchContextSize(256, 64)).toBe(1024);
    expect(benchContextSize(1000, 64)).toBe(2048);
  });
});

describe("SseParser", () => {
  it("returns complete events' data, keeping partial ones", () => {
    const p = new SseParser();
    expect(p.push('data: {"a":1}\n\ndata: {"b"')).toEqual(['{"a":1}']);
    expect(p.push(":2}\r\n\r\n: comment\n\ndata: [DONE]\n\n")).toEqual(['{"b":2}', "[DONE]"]);
    expect(p.push("data: x\ndata: y\n\n")).toEqual(["x\ny"]);
  });
});

describe("flags", () => {
  it("parses whole numbers and batch lists, rejecting the rest", () => {
    expect(integerFlag("--n", undefined, 7, 1)).toBe(7);
    expect(integerFlag("--n", "12", 7, 1)).toBe(12);
    for (const bad of ["0", "-1", "1.5", "x", ""])
      expect(() => integerFlag("--n", bad, 7, 1)).toThrow(BenchFlagError);
    expect(() => integerFlag("--n", "11", 7, 1, 10)).toThrow("from 1 to 10");
    expect(batchesFlag("--b", "1, 2,4", [1])).toEqual([1, 2, 4]);
    expect(batchesFlag("--b", undefined, [1, 2])).toEqual([1, 2]);
    for (const bad of ["", "1,,2", "0", "1,x", "2,2", "1000"])
      expect(() => batchesFlag("--b", bad, [1])).toThrow(BenchFlagError);
  });
});

describe("formatComparison", () => {
  const measurement = (batch: number, agg: number): BatchMeasurement => ({
    batch,
    promptTokens: 256,
    completionTokens: 64 * batch,
    shortRows: 0,
    ttftMs: 700,
    prefillTokensPerSecond: 360,
    decodeTokensPerSecondPerRow: agg / batch,
    decodeTokensPerSecondAggregate: agg,
    decodeTokensPerSecondSteady: agg,
    wallMs: 3000,
    tokensPerSecondWall: (64 * batch) / 3,
  });
  const result = (target: string, aggs: number[]): TargetResult => ({
    target,
    batches: aggs.map((agg, i) => {
      const m = measurement(2 ** i, agg);
      return { batch: m.batch, median: m, best: m, rounds: [m] };
    }),
  });

  it("prints targets side by side with ratio columns", () => {
    const text = formatComparison(
      [result("direct", [20, 30]), result("engine", [19, 33])],
      [["engine", "direct"]],
    );
    const lines = text.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^batch\s+metric\s+direct\s+engine\s+engine\/direct$/);
    expect(lines).toHaveLength(1 + 2 * 5);
    expect(lines.find((l) => l.startsWith("2 ") && l.includes("aggregate"))).toMatch(
      /30\.0\s+33\.0\s+1\.10$/,
    );
  });
});
