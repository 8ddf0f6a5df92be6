/** The llama addon on a synthesized tiny Qwen3 model (real llama.cpp, CPU, one thread). */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { synthesizeModel } from "@darkbloom/models";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type KvType,
  llamaErrorCode,
  NativeLlamaModel,
  type NativeLlamaScheduler,
  type NativeSamplingOptions,
  nativeLlamaAvailable,
  type SchedulerOptions,
} from "./llama.js";
import { generate, type Outcome, thrownCodeWith } from "./scheduler.test-support.js";

/** The addon must be built where CI says so; elsewhere these tests skip when it is not. */
function addonTestable(): boolean {
  if (nativeLlamaAvailable()) return true;
  if (process.env.DARKBLOOM_NATIVE_REQUIRED === "1") throw new Error("the llama addon is not built");
  return false;
}

const PROMPTS = [
  "The quick brown fox",
  "Once upon a time, there was a little robot",
  "What is the capital of France?",
  "1, 2, 3, 10, 42 and 2048",
];
const GREEDY: NativeSamplingOptions = { temperature: 0 };

let dir: string;
let modelPath: string;
let model: NativeLlamaModel;
const schedulers: NativeLlamaScheduler[] = [];

async function scheduler(options: SchedulerOptions = {}): Promise<NativeLlamaScheduler> {
  const s = await model.createScheduler({ rows: 4, contextPerRow: 512, threads: 1, ...options });
  schedulers.push(s);
  return s;
}

function prompt(text: string): Int32Array {
  return model.tokenize(text, { addSpecial: true });
}

const thrownCode = (fn: () => unknown) => thrownCodeWith(llamaErrorCode, fn);

describe.skipIf(!addonTestable())("the llama addon on a tiny synthesized model", () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "darkbloom-native-llama-"));
    modelPath = join(dir, "tiny.gguf");
    await synthesizeModel({ shape: "tiny", seed: 1, outPath: modelPath });
    model = await NativeLlamaModel.load(modelPath);
  });

  afterAll(async () => {
    await Promise.all(schedulers.map((s) => s.close()));
    await model?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("reports the model's metadata and refuses what it cannot load", async () => {
    const info = model.info();
    expect(info).toMatchObject({ nVocab: 512, nCtxTrain: 2048, architecture: "qwen3" });
    expect(info.sizeBytes).toBeGreaterThan(0);
    expect(info.eos === null || model.isEog(info.eos)).toBe(true);
    await expect(NativeLlamaModel.load(join(dir, "missing.gguf"))).rejects.toMatchObject({
      code: "model_load_failed",
    });
    expect(thrownCode(() => model.piece(512))).toBe("bad_input");
    expect(thrownCode(() => model.isEog(-1))).toBe("bad_input");
  });

  it("tokenizes exactly as node-llama-cpp and its pieces spell the text", async () => {
    const llama = await getLlama({
      gpu: false,
      build: "never",
      skipDownload: true,
      logLevel: LlamaLogLevel.error,
    });
    const reference = await llama.loadModel({ modelPath });
    try {
      for (const text of [...PROMPTS, "héllo wörld ✓", "  spaces\tand\nnewlines  "]) {
        const tokens = model.tokenize(text, { addSpecial: false });
        expect([...tokens]).toEqual(reference.tokenize(text));
        const bytes = Buffer.concat([...tokens].map((t) => model.piece(t)));
        expect(bytes.toString("utf8")).toBe(text);
      }
    } finally {
      await reference.dispose();
    }
  });

  it("generates exactly the same greedy tokens at batch 4 as one at a time", async () => {
    const batched = await scheduler({ rows: 4 });
    const together = await Promise.all(
      PROMPTS.map((p) => generate(batched, { prompt: prompt(p), maxTokens: 24, sampling: GREEDY })),
    );
    const single = await scheduler({ rows: 1 });
    const alone: Outcome[] = [];
    for (const p of PROMPTS)
      alone.push(await generate(single, { prompt: prompt(p), maxTokens: 24, sampling: GREEDY }));
    expect(together).toEqual(alone);
    expect(together.some((o) => o.tokens.length > 1)).toBe(true);
    for (const [i, o] of together.entries()) {
      expect(o.promptTokens).toBe(prompt(PROMPTS[i] ?? "").length);
      expect(o.generatedTokens).toBe(o.tokens.length);
      expect(o.reason).toBe(o.tokens.length === 24 ? "length" : "stop");
    }
    // Different prompts, different continuations: the comparison is not vacuous.
    expect(new Set(together.map((o) => o.tokens.join())).size).toBeGreaterThan(1);
    const stats = batched.stats();
    expect(stats).toMatchObject({ busyRows: 0, queued: 0, rows: 4, kvCellsUsed: 0 });
    expect(stats.tokensGenerated).toBe(together.reduce((n, o) => n + o.tokens.length, 0));
    expect(stats.decodeSteps).toBeGreaterThan(0);
    expect(stats.decodeSteps).toBeLessThan(stats.tokensGenerated);
    expect(stats.kvCells).toBeGreaterThanOrEqual(4 * 512);
  });

  it("prefills a long prompt in chunks while 3 rows decode, sampling exactly as alone", async () => {
    const long = prompt(PROMPTS.join(" and then ").repeat(3));
    expect(long.length).toBeGreaterThan(5 * 16);
    const options = { rows: 4, prefillChunk: 16 };
    const busy = await scheduler(options);
    let started!: () => void;
    const othersDecoding = new Promise<void>((r) => {
      started = r;
    });
    let seen = 0;
    const others = PROMPTS.slice(0, 3).map((p) =>
      generate(
        busy,
        { prompt: prompt(p), maxTokens: 200, sampling: { ...GREEDY, logitBias: eogBans() } },
        () => {
          if (++seen === 3) started();
        },
      ),
    );
    await othersDecoding;
    const joined = await generate(busy, { prompt: long, maxTokens: 16, sampling: GREEDY });
    expect(busy.stats().busyRows).toBe(3); // the others were decoding the whole time
    await Promise.all(others);
    const alone = await generate(await scheduler(options), { prompt: long, maxTokens: 16, sampling: GREEDY });
    expect(joined).toEqual(alone);
  });

  it("reproduces a seed alone and among other rows; another seed differs", async () => {
    const sampling = (seed: number): NativeSamplingOptions => ({
      temperature: 1.5,
      topK: 100,
      topP: 0.95,
      seed,
    });
    const request = (seed: number) => ({
      prompt: prompt(PROMPTS[0] ?? ""),
      maxTokens: 24,
      sampling: sampling(seed),
    });
    const s = await scheduler({ rows: 4 });
    const first = await generate(s, request(42));
    const again = await generate(s, request(42));
    const [, amid] = await Promise.all([
      generate(s, { ...request(7), prompt: prompt(PROMPTS[1] ?? "") }),
      generate(s, request(42)),
      generate(s, request(8)),
      generate(s, { ...request(9), prompt: prompt(PROMPTS[2] ?? "") }),
    ]);
    const other = await generate(s, request(43));
    expect(first.tokens.length).toBeGreaterThan(3);
    expect(again).toEqual(first);
    expect(amid).toEqual(first);
    expect(other.tokens).not.toEqual(first.tokens);
  });

  it("frees a cancelled running row at once for a queued request (rows: 1)", async () => {
    const s = await scheduler({ rows: 1 });
    let cancelAfterFirst = () => {};
    const running = generate(
      s,
      {
        id: "long",
        prompt: prompt(PROMPTS[0] ?? ""),
        maxTokens: 400,
        sampling: { ...GREEDY, logitBias: eogBans() },
      },
      () => cancelAfterFirst(),
    );
    const queued = generate(s, {
      id: "next",
      prompt: prompt(PROMPTS[1] ?? ""),
      maxTokens: 8,
      sampling: GREEDY,
    });
    cancelAfterFirst = () => {
      s.cancel("long");
      s.cancel("long"); // idempotent
    };
    const cancelled = await running;
    expect(cancelled.reason).toBe("cancelled");
    expect(cancelled.tokens.length).toBeLessThan(400);
    const next = await queued;
    expect(next.reason).toMatch(/^(length|stop)$/);
    s.cancel("next"); // finished: ignored
    s.cancel("never-submitted");
    expect(s.stats()).toMatchObject({ busyRows: 0, queued: 0, kvCellsUsed: 0 });
  });

  it("cancels a queued request at once", async () => {
    const s = await scheduler({ rows: 1 });
    const p = {
      prompt: prompt(PROMPTS[0] ?? ""),
      maxTokens: 300,
      sampling: { ...GREEDY, logitBias: eogBans() },
    };
    const running = generate(s, { ...p, id: "a" });
    const queued = generate(s, { ...p, id: "b" });
    s.cancel("b");
    expect((await queued).reason).toBe("cancelled");
    expect((await queued).tokens).toEqual([]);
    s.cancel("a");
    expect((await running).reason).toBe("cancelled");
  });

  it("throws busy past the queue depth", async () => {
    const s = await scheduler({ rows: 1, queueDepth: 1 });
    const p = {
      prompt: prompt(PROMPTS[0] ?? ""),
      maxTokens: 300,
      sampling: { ...GREEDY, logitBias: eogBans() },
    };
    const a = generate(s, { ...p, id: "a" });
    const b = generate(s, { ...p, id: "b" });
    expect(thrownCode(() => s.submit({ ...p, id: "c" }, () => {}))).toBe("busy");
    expect(thrownCode(() => s.submit({ ...p, id: "a" }, () => {}))).toBe("bad_input");
    s.cancel("a");
    s.cancel("b");
    expect((await a).reason).toBe("cancelled");
    expect((await b).reason).toBe("cancelled");
  });

  it("refuses prompt + maxTokens beyond the context per row, and bad input, before anything runs", async () => {
    const s = await scheduler({ rows: 2, contextPerRow: 64 });
    const p = model.tokenize("a b c d e f g h i j ".repeat(6));
    expect(p.length).toBeGreaterThan(54);
    expect(p.length).toBeLessThanOrEqual(64);
    expect(thrownCode(() => s.submit({ id: "x", prompt: p, maxTokens: 65 - p.length }, () => {}))).toBe(
      "context_length_exceeded",
    );
    expect(
      thrownCode(() => s.submit({ id: "x", prompt: new Int32Array([5, 512]), maxTokens: 1 }, () => {})),
    ).toBe("bad_input");
    expect(thrownCode(() => s.submit({ id: "x", prompt: new Int32Array(), maxTokens: 1 }, () => {}))).toBe(
      "bad_input",
    );
    expect(thrownCode(() => s.submit({ id: "x", prompt: p, maxTokens: 0 }, () => {}))).toBe("bad_input");
    const badSampling = { id: "x", prompt: p.subarray(0, 4), maxTokens: 1, sampling: { topP: 0 } };
    expect(thrownCode(() => s.submit(badSampling, () => {}))).toBe("bad_input");
    expect(s.stats()).toMatchObject({ promptTokensProcessed: 0, queued: 0, busyRows: 0 });
    await expect(model.createScheduler({ rows: 0 })).rejects.toMatchObject({ code: "bad_input" });
    await expect(model.createScheduler({ kvType: "q5_1" as KvType })).rejects.toMatchObject({
      code: "bad_input",
    });
    // Exactly at the limit is fine.
    const fits = await generate(s, { prompt: p, maxTokens: 64 - p.length, sampling: GREEDY });
    expect(fits.error).toBeUndefined();
  });

  it.each(["q8_0", "q4_0"] as const)(
    "with a %s KV cache generates the same at batch 2 and 1",
    async (kvType) => {
      const two = await scheduler({ rows: 2, kvType });
      const one = await scheduler({ rows: 1, kvType });
      const requests = PROMPTS.slice(0, 2).map((p) => ({
        prompt: prompt(p),
        maxTokens: 24,
        sampling: GREEDY,
      }));
      const together = await Promise.all(requests.map((r) => generate(two, r)));
      const alone: Outcome[] = [];
      for (const r of requests) alone.push(await generate(one, r));
      expect(together).toEqual(alone);
      expect(together[0]?.tokens.length).toBeGreaterThan(0);
    },
  );

  it("penalizes the tokens it generated, never the prompt's (OpenAI's presence and frequency penalties)", async () => {
    const s = await scheduler({ rows: 2 });
    const penalties: NativeSamplingOptions = { temperature: 0, presencePenalty: 2, frequencyPenalty: 2 };
    // A prompt whose greedy next token already occurs in it: the prompt followed by the model's own
    // greedy continuation up to the first token that repeats one before it (greedy output does not
    // depend on where the prompt ends, so that token comes next). The prompt must not push it down.
    const base = Array.from(prompt(PROMPTS[1] ?? ""));
    const continuation = (
      await generate(s, { prompt: Int32Array.from(base), maxTokens: 64, sampling: GREEDY })
    ).tokens;
    const at = continuation.findIndex((t, i) => base.includes(t) || continuation.slice(0, i).includes(t));
    const found = at < 0 ? undefined : continuation[at];
    const tokens = [...base, ...continuation.slice(0, Math.max(0, at))];
    expect(found).toBeDefined();
    const penalized = await generate(s, {
      prompt: Int32Array.from(tokens),
      maxTokens: 24,
      sampling: penalties,
    });
    expect(penalized.tokens[0]).toBe(found);
    // And they do act on what it generated: with every repeat penalized, no token comes back as often.
    const free = await generate(s, { prompt: Int32Array.from(tokens), maxTokens: 24, sampling: GREEDY });
    const mostRepeated = (list: number[]) => Math.max(...list.map((t) => list.filter((u) => u === t).length));
    expect(mostRepeated(penalized.tokens)).toBeLessThan(mostRepeated(free.tokens));
  });

  it("forces a token with a logit bias", async () => {
    const forced = model.tokenize("hello", { addSpecial: false })[0] ?? 0;
    expect(model.isEog(forced)).toBe(false);
    const s = await scheduler({ rows: 2 });
    for (const temperature of [0, 1]) {
      const out = await generate(s, {
        prompt: prompt(PROMPTS[0] ?? ""),
        maxTokens: 10,
        sampling: { temperature, seed: 1, logitBias: [[forced, 100]] },
      });
      expect(out).toMatchObject({ reason: "length", tokens: Array(10).fill(forced) });
    }
  });

  it("close() with rows running and queued completes them all as cancelled and resolves", async () => {
    const s = await model.createScheduler({ rows: 2, contextPerRow: 512, threads: 1 });
    const p = {
      prompt: prompt(PROMPTS[0] ?? ""),
      maxTokens: 400,
      sampling: { ...GREEDY, logitBias: eogBans() },
    };
    let started!: () => void;
    const decoding = new Promise<void>((r) => {
      started = r;
    });
    const all = [generate(s, p, () => started()), generate(s, p), generate(s, p)];
    await decoding;
    await s.close();
    const outcomes = await Promise.all(all);
    expect(outcomes.map((o) => o.reason)).toEqual(["cancelled", "cancelled", "cancelled"]);
    expect(outcomes[2]?.tokens).toEqual([]);
    expect(thrownCode(() => s.submit({ ...p, id: "late" }, () => {}))).toBe("closed");
    await s.close(); // idempotent
  });
});

/** Bans every end-of-generation token, so a row runs until its maxTokens (or a cancel). */
function eogBans(): Array<[number, number]> {
  const bans: Array<[number, number]> = [];
  for (let t = 0; t < model.info().nVocab; t++) if (model.isEog(t)) bans.push([t, Number.NEGATIVE_INFINITY]);
  return bans;
}
