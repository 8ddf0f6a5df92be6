import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ModelFile } from "../engine/engine.js";
import { biggestFit, type CandidateChecks, IntegrityAbort } from "./feasibility.js";
import { type CellFigures, climb, isNewBest, type Objective } from "./hill-climb.js";
import { AxisError, type Knobs, knobsKey, parseAxis, type SearchSpace } from "./knobs.js";
import { fittedStart, MIN_FITTED_CONTEXT } from "./memory-fit.js";
import { type RecipeInputs, recipeDomain, recipeHash } from "./recipe.js";
import { TRIALS_FILE, type TrialOutcome, type TrialRecord, TrialStore, trialKey } from "./trial-store.js";

const space: SearchSpace = {
  engine: ["llama"],
  kvBits: [undefined, 8, 4],
  maxBatch: [1, 2, 4, 8, 16],
  maxContext: [1024],
  threads: [1, 2, 4, 8],
};
const start: Knobs = { engine: "llama", kvBits: undefined, maxBatch: 1, maxContext: 1024, threads: 1 };

/** A deterministic objective with one peak: 4 threads, batch 8, 8-bit KV; batch 16 does not fit. */
class PeakObjective implements Objective {
  calls: Knobs[] = [];
  async measure(knobs: Knobs): Promise<TrialOutcome> {
    this.calls.push(knobs);
    if (knobs.maxBatch === 16) return { exitReason: "oom", reason: "does not fit" };
    const tps =
      1000 -
      40 * (Math.log2(knobs.threads) - 2) ** 2 -
      30 * (Math.log2(knobs.maxBatch) - 3) ** 2 +
      (knobs.kvBits === 8 ? 50 : knobs.kvBits === 4 ? 20 : 0);
    return {
      exitReason: "ok",
      figures: { decodeTokensPerSecond: tps, ttftMs: 100, completionTokens: 10, batches: 1 },
    };
  }
}

const cell = (tps: number, ttft: number | undefined, feasible = true): CellFigures => ({
  knobs: start,
  feasible,
  decodeTokensPerSecond: tps,
  ttftMs: ttft,
});

describe("stage 2 hill-climb", () => {
  it("converges to the peak of a deterministic objective, skipping the cell that does not fit", async () => {
    const objective = new PeakObjective();
    const result = await climb(space, start, objective, { replicates: 2, budget: 500, tieEpsilon: 0.01 });
    expect(result.converged).toBe(true);
    expect(result.best.knobs).toEqual({ ...start, threads: 4, maxBatch: 8, kvBits: 8 });
    expect(result.best.decodeTokensPerSecond).toBe(1050);
    // One failed replicate ends a cell: every batch-16 cell was tried once, never replicated.
    const oom = objective.calls.filter((k) => k.maxBatch === 16).map(knobsKey);
    expect(oom.length).toBeGreaterThan(0);
    expect(new Set(oom).size).toBe(oom.length);
    expect(result.trials).toBe(objective.calls.length);
  });

  it("re-measures the incumbent beside every challenger, taking turns at going first", async () => {
    const objective = new PeakObjective();
    const result = await climb(space, start, objective, { replicates: 1, budget: 500, tieEpsilon: 0.01 });
    const roles = result.evaluations.map((e) => e.role);
    expect(roles[0]).toBe("incumbent");
    const pairs = roles.slice(1);
    for (let i = 0; i < pairs.length; i += 2)
      expect(new Set(pairs.slice(i, i + 2))).toEqual(new Set(["incumbent", "challenger"]));
    expect(pairs.slice(0, 4)).toEqual(["incumbent", "challenger", "challenger", "incumbent"]);
  });

  it("a drifting machine cannot promote a challenger measured against stale figures", async () => {
    // Every trial is 1% slower than the one before (heating up). Threads do not matter at all.
    let n = 0;
    const drifting: Objective = {
      measure: async () => ({
        exitReason: "ok",
        figures: { decodeTokensPerSecond: 1000 * 0.99 ** n++, ttftMs: 50, completionTokens: 1, batches: 1 },
      }),
    };
    const flat: SearchSpace = { ...space, kvBits: [undefined], maxBatch: [1], threads: [1, 2, 4, 8] };
    const result = await climb(flat, start, drifting, { replicates: 1, budget: 100, tieEpsilon: 0.015 });
    // Measured beside a fresh incumbent, the 1% drift stays inside the tie band: nothing moves.
    expect(result.best.knobs.threads).toBe(1);
  });

  it("stops at the budget without exceeding it", async () => {
    const objective = new PeakObjective();
    const result = await climb(space, start, objective, { replicates: 2, budget: 9, tieEpsilon: 0.01 });
    expect(result.converged).toBe(false);
    expect(result.trials).toBeLessThanOrEqual(9);
    expect(objective.calls.length).toBe(result.trials);
  });

  it("isNewBest: rate first, TTFT inside the tie band, infeasible never wins", () => {
    expect(isNewBest(cell(110, 200), cell(100, 100), 0.05)).toBe(true);
    expect(isNewBest(cell(90, 10), cell(100, 100), 0.05)).toBe(false);
    expect(isNewBest(cell(102, 90), cell(100, 100), 0.05)).toBe(true);
    expect(isNewBest(cell(102, 110), cell(100, 100), 0.05)).toBe(false);
    expect(isNewBest(cell(102, undefined), cell(100, 100), 0.05)).toBe(false);
    expect(isNewBest(cell(100, 50), cell(100, undefined), 0.05)).toBe(true);
    expect(isNewBest(cell(1, 1), cell(0, 1), 0.05)).toBe(true);
    expect(isNewBest(cell(0, 1), cell(0, 1), 0.05)).toBe(false);
    expect(isNewBest(cell(500, 1, false), cell(1, 1), 0.05)).toBe(false);
    expect(isNewBest(cell(1, 1), cell(500, 1, false), 0.05)).toBe(true);
  });
});

describe("axes", () => {
  const ctx = { baseDir: "/", home: "/" };
  it("parse with the settings' own parsers, sorted into neighbour order", () => {
    expect(parseAxis("maxBatch", "8,1, 4", ctx)).toEqual([1, 4, 8]);
    expect(parseAxis("kvBits", "4,off,8", ctx)).toEqual([undefined, 8, 4]);
  });
  it("an empty cell, a duplicate or a value serve rejects is an AxisError", () => {
    expect(() => parseAxis("maxBatch", "1,,2", ctx)).toThrow(/--max-batch-axis has an empty cell/);
    expect(() => parseAxis("threads", "2,2", ctx)).toThrow(/lists 2 twice/);
    expect(() => parseAxis("kvBits", "3", ctx)).toThrow(/must be 4 or 8/);
    expect(() => parseAxis("maxBatch", "5000", ctx)).toThrow(AxisError);
    expect(() => parseAxis("threads", "auto", ctx)).toThrow(AxisError);
  });
});

function model(id: string, sha = id.padEnd(64, "0")): ModelFile {
  return {
    id,
    path: `/m/${id}.gguf`,
    sizeBytes: 1,
    quantization: "Q8_0",
    sha256: sha,
    architecture: "qwen3",
    contextLength: 2048,
  };
}

describe("stage 1 biggest fit", () => {
  const gate = { maxTtftMs: 1000, minDecodeTokensPerSecond: 10 };
  const startOf = async () => start;
  const ok: TrialOutcome = {
    exitReason: "ok",
    figures: { decodeTokensPerSecond: 50, ttftMs: 20, completionTokens: 8, batches: 1 },
  };
  function checks(
    script: Record<string, Partial<Record<"fit" | "prewarm" | "probe", TrialOutcome>>>,
    probed: string[],
  ): CandidateChecks {
    const check = (m: ModelFile, step: "fit" | "prewarm") => {
      const o = script[m.id]?.[step];
      return Promise.resolve(
        o ? { ok: false as const, exitReason: o.exitReason, reason: o.reason ?? "" } : { ok: true as const },
      );
    };
    return {
      fit: (m) => check(m, "fit"),
      prewarm: (m) => check(m, "prewarm"),
      probe: async (m) => {
        probed.push(m.id);
        return script[m.id]?.probe ?? ok;
      },
    };
  }

  it("keeps the operator's order and STOPS at the first that passes; the rest are alternates, never probed", async () => {
    const probed: string[] = [];
    const result = await biggestFit([model("1b"), model("32b")], checks({}, probed), gate, startOf);
    expect(result.chosen?.id).toBe("1b");
    expect(result.alternates).toEqual(["32b"]);
    expect(probed).toEqual(["1b"]);
  });

  it("skips what does not fit (with its reason) and what fails the gate; a transient pre-warm failure advances", async () => {
    const probed: string[] = [];
    const result = await biggestFit(
      [model("big"), model("slow"), model("flaky"), model("small"), model("tiny")],
      checks(
        {
          big: { fit: { exitReason: "oom", reason: "needs 40 GiB" } },
          slow: {
            probe: {
              ...ok,
              figures: { decodeTokensPerSecond: 2, ttftMs: 20, completionTokens: 8, batches: 1 },
            },
          },
          flaky: { prewarm: { exitReason: "timeout", reason: "took longer than 120 s" } },
        },
        probed,
      ),
      gate,
      startOf,
    );
    expect(result.chosen?.id).toBe("small");
    expect(result.alternates).toEqual(["tiny"]);
    expect(probed).toEqual(["slow", "small"]);
    expect(result.verdicts.map((v) => [v.model, v.exitReason])).toEqual([
      ["big", "oom"],
      ["slow", "gate_failed"],
      ["flaky", "timeout"],
      ["small", "ok"],
    ]);
    expect(result.verdicts[0]?.reason).toBe("needs 40 GiB");
  });

  it("checks each candidate's memory fit at the knobs it starts from", async () => {
    const seen: string[] = [];
    const fitted = async (m: ModelFile): Promise<Knobs> => ({
      ...start,
      maxContext: m.id === "big" ? 4096 : 8192,
    });
    const base = checks({}, []);
    await biggestFit(
      [model("big"), model("small")],
      {
        ...base,
        fit: (m, knobs) => {
          seen.push(`${m.id}:${knobs.maxContext}`);
          return base.fit(m, knobs);
        },
      },
      gate,
      fitted,
    );
    expect(seen).toEqual(["big:4096"]);
  });

  it("an integrity failure aborts the whole run, after recording it", async () => {
    const seen: string[] = [];
    const run = biggestFit(
      [model("a"), model("b")],
      checks({ a: { prewarm: { exitReason: "integrity", reason: "sha256 mismatch" } } }, []),
      gate,
      startOf,
      (_m, v) => {
        seen.push(`${v.model}:${v.exitReason}`);
      },
    );
    await expect(run).rejects.toBeInstanceOf(IntegrityAbort);
    expect(seen).toEqual(["a:integrity"]);
  });
});

describe("the context a candidate starts from", () => {
  // A model trained on 40,960 tokens whose KV cache costs 10 bytes a token a row, weights 1,000.
  const estimator = {
    need: async (_m: ModelFile, k: Knobs) => {
      const contextSize = Math.min(k.maxContext, 40_960);
      return { bytes: 1_000 + contextSize * k.maxBatch * 10, contextSize };
    },
  };
  const big = { ...start, maxBatch: 4, maxContext: 50_000 };

  it("is the configured one when it fits", async () => {
    expect(await fittedStart(estimator, model("m"), big, 1_000 + 40_960 * 40)).toBe(big);
  });

  it("is halved from the trained length, on whole KiB, until the rows fit, as serve lowers it", async () => {
    // 4 rows: 40,960 and 20,480 tokens do not fit 500,000 bytes; 10,240 does.
    expect(await fittedStart(estimator, model("m"), big, 500_000)).toEqual({ ...big, maxContext: 10_240 });
  });

  it("stays the configured one (which the memory check refuses) when not even the floor fits", async () => {
    expect(await fittedStart(estimator, model("m"), big, 1_000 + MIN_FITTED_CONTEXT * 4 * 10 - 1)).toBe(big);
    // A workload longer than the floor raises it.
    expect(await fittedStart(estimator, model("m"), big, 500_000, 12_000)).toBe(big);
  });
});

describe("trial store", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "autotune-store-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const record = (key: string, exitReason: TrialRecord["exitReason"]): TrialRecord => ({
    v: 1,
    runId: "r1",
    key,
    stage: 2,
    model: "m",
    modelSha256: "s",
    knobs: start,
    workload: "w",
    occurrence: 0,
    exitReason,
    at: "2026-01-01T00:00:00.000Z",
    durationMs: 1,
  });

  it("resumes terminal trials only, survives a torn last line, and --fresh ignores the past", async () => {
    const store = await TrialStore.open(dir);
    await store.append(record("k-ok", "ok"));
    await store.append(record("k-oom", "oom"));
    await store.append(record("k-int", "interrupted"));
    await store.close();
    await writeFile(
      join(dir, TRIALS_FILE),
      `${await readFile(join(dir, TRIALS_FILE), "utf8")}{"v":1,"key":"torn`,
    );
    const again = await TrialStore.open(dir);
    expect(again.lookup("k-ok")?.exitReason).toBe("ok");
    expect(again.lookup("k-oom")?.exitReason).toBe("oom");
    expect(again.lookup("k-int")).toBeUndefined();
    expect(again.lookup("k-ok")?.knobs.kvBits).toBeUndefined();
    expect(again.skippedLines).toBe(1);
    await again.close();
    const fresh = await TrialStore.open(dir, { fresh: true });
    expect(fresh.lookup("k-ok")).toBeUndefined();
    await fresh.close();
  });

  it("keys separate stage, model, knobs, workload and occurrence", () => {
    const base = {
      stage: 2 as const,
      modelSha256: "s",
      knobs: knobsKey(start),
      workload: "w",
      occurrence: 0,
    };
    const keys = new Set([
      trialKey(base),
      trialKey({ ...base, stage: 1 }),
      trialKey({ ...base, modelSha256: "t" }),
      trialKey({ ...base, knobs: knobsKey({ ...start, threads: 2 }) }),
      trialKey({ ...base, workload: "w2" }),
      trialKey({ ...base, occurrence: 1 }),
    ]);
    expect(keys.size).toBe(6);
  });
});

describe("recipe hash", () => {
  const inputs: RecipeInputs = {
    machine: {
      platform: "linux",
      arch: "x64",
      cpuModel: "Test CPU",
      cpuCount: 2,
      totalMemoryBytes: 8 * 1024 ** 3,
    },
    candidates: [model("a"), model("b")],
    workload: { promptTokens: 32, genTokens: 16, batch: 2, trialSeconds: 1 },
    gate: { maxTtftMs: 1000, minDecodeTokensPerSecond: 1 },
    space,
    start,
    replicates: 2,
    budget: 10,
    tieEpsilon: 0.02,
    memoryBudgetBytes: 1024 ** 3,
  };
  const chosen = model("a");
  const knobs: Knobs = { ...start, threads: 2, kvBits: 8 };

  it("is sha256 over the JCS of the stated domain, stable across key order and runs", () => {
    const domain = recipeDomain(inputs, chosen, knobs);
    const hash = recipeHash(domain);
    expect(hash).toMatch(/^sha256:[0-9a-f]{64}$/);
    const reordered = Object.fromEntries(Object.entries(domain).reverse()) as typeof domain;
    expect(recipeHash(reordered)).toBe(hash);
    expect(recipeHash(recipeDomain({ ...inputs }, { ...chosen }, { ...knobs }))).toBe(hash);
    expect(domain.knobs).toEqual({
      engine: "llama",
      kv_bits: 8,
      max_batch: 1,
      max_context: 1024,
      threads: 2,
    });
    expect(Object.keys(domain).sort()).toEqual(["inputs", "knobs", "machine", "model", "recipe_version"]);
  });

  it("changes with the machine, an input, the model or a knob", () => {
    const hash = recipeHash(recipeDomain(inputs, chosen, knobs));
    const variants = [
      recipeDomain({ ...inputs, machine: { ...inputs.machine, cpuCount: 4 } }, chosen, knobs),
      recipeDomain({ ...inputs, workload: { ...inputs.workload, batch: 4 } }, chosen, knobs),
      recipeDomain({ ...inputs, candidates: [model("b"), model("a")] }, chosen, knobs),
      recipeDomain(inputs, model("a", "f".repeat(64)), knobs),
      recipeDomain(inputs, chosen, { ...knobs, kvBits: undefined }),
    ];
    for (const v of variants) expect(recipeHash(v)).not.toBe(hash);
  });
});
