/** Conformance tests of the llama engine on a synthesized tiny Qwen3 model (real llama.cpp, CPU). */
import { mkdtemp, rm, stat, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type GgufKv, ModelTokenizer, planModel, synthesizeModel, writeGgufFile } from "@darkbloom/models";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Engine,
  EngineError,
  type GenerationRequest,
  type GenerationResult,
  type ModelFile,
  type ModelLoadEvent,
  type SamplingOptions,
  type TokenEvent,
} from "../engine.js";
import { LlamaEngine, type LlamaEngineOptions } from "./llama-engine.js";
import { ModelValidator } from "./model-validator.js";

let dir: string;
let tiny: ModelFile;
const engines: LlamaEngine[] = [];

const PROMPTS = [
  "The quick brown fox",
  "Once upon a time, there was a little robot",
  "What is the capital of France?",
  "1, 2, 3, 10, 42 and 2048",
];

function makeEngine(options: Partial<LlamaEngineOptions> = {}): LlamaEngine {
  const engine = new LlamaEngine({
    maxBatch: 4,
    maxContext: 1024,
    threads: 1,
    prefillChunk: 64,
    idleTimeoutMinutes: 0,
    gpu: false,
    ...options,
  });
  engines.push(engine);
  return engine;
}

let seq = 0;
function request(
  input: string | GenerationRequest["input"],
  sampling: Partial<SamplingOptions> = {},
  model = tiny.id,
): GenerationRequest {
  return {
    id: `req-${++seq}`,
    model,
    input: typeof input === "string" ? { kind: "text", prompt: input } : input,
    sampling: { temperature: 0, topP: 1, topK: 0, stop: [], maxTokens: 24, ...sampling },
  };
}

interface Run {
  text: string;
  events: TokenEvent[];
  result: GenerationResult;
}

async function run(engine: Engine, req: GenerationRequest): Promise<Run> {
  const events: TokenEvent[] = [];
  const generation = engine.generate(req, (e) => events.push(e));
  const result = await generation.done;
  return { text: events.map((e) => e.text).join(""), events, result };
}

async function rejection(promise: Promise<unknown>): Promise<EngineError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(EngineError);
    return err as EngineError;
  }
  throw new Error("expected a rejection");
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-engine-"));
  const path = join(dir, "tiny.gguf");
  const synth = await synthesizeModel({ shape: "tiny", seed: 1, outPath: path });
  tiny = {
    id: "tiny-qwen3",
    path,
    sizeBytes: synth.sizeBytes,
    quantization: synth.quantization,
    sha256: synth.sha256,
    architecture: synth.architecture,
    contextLength: synth.contextLength,
  };
});

afterAll(async () => {
  await Promise.all(engines.map((e) => e.close()));
  await rm(dir, { recursive: true, force: true });
});

describe("llama engine on a tiny synthesized model", () => {
  let engine: LlamaEngine;
  let single: LlamaEngine;

  beforeAll(async () => {
    engine = makeEngine({ maxBatch: 4 });
    single = makeEngine({ maxBatch: 1, validator: false });
    await engine.load(tiny); // vetted in a child process first
    await single.load(tiny);
  });

  it("reports itself, its loaded model, and the device node-llama-cpp loaded (gpu: false: the CPU)", async () => {
    expect(engine.backend).toBe("llama");
    expect(engine.stats().loadedModels).toEqual([tiny.id]);
    expect(await engine.device()).toEqual({ accelerator: "cpu", gpus: [] });
  });

  it("greedy decoding is deterministic and honours max_tokens", async () => {
    const a = await run(engine, request(PROMPTS[0]!, { maxTokens: 24 }));
    const b = await run(engine, request(PROMPTS[0]!, { maxTokens: 24 }));
    expect(a.result).toMatchObject({ finishReason: "length", generatedTokens: 24 });
    expect(a.result.promptTokens).toBeGreaterThan(3);
    expect(a.text.length).toBeGreaterThan(0);
    expect(b.text).toBe(a.text);
    expect(b.events).toEqual(a.events);
    expect(a.events.reduce((n, e) => n + e.tokens, 0)).toBeLessThanOrEqual(24);

    const short = await run(engine, request(PROMPTS[0]!, { maxTokens: 5 }));
    expect(short.result).toMatchObject({ finishReason: "length", generatedTokens: 5 });
    expect(a.text.startsWith(short.text)).toBe(true);
  });

  it("bills what the model's tokenizer makes of the text emitted, as the coordinator counts it", async () => {
    const llama = await getLlama({
      gpu: false,
      build: "never",
      logLevel: LlamaLogLevel.error,
      maxThreads: 1,
    });
    const counter = await ModelTokenizer.open(llama, tiny.path);
    try {
      for (const temperature of [0, 1.5]) {
        const r = await run(engine, request(PROMPTS[1]!, { maxTokens: 40, temperature, seed: 7 }));
        expect(r.result.completionTokens).toBe(counter.countText(r.text));
        expect(r.result.promptTokens).toBe(counter.countPrompt({ kind: "text", prompt: PROMPTS[1]! }));
      }
    } finally {
      await counter.dispose();
    }
  });

  it("renders chat requests with the model's chat template", async () => {
    const chat = await run(
      engine,
      request(
        {
          kind: "chat",
          messages: [
            { role: "system", content: "You are terse." },
            { role: "user", content: "Say hello." },
          ],
        },
        { maxTokens: 12 },
      ),
    );
    expect(chat.result.completionTokens).toBeGreaterThan(0);
    // The ChatML rendering adds the role markup around the messages.
    expect(chat.result.promptTokens).toBeGreaterThan(12);
  });

  it("seeded sampling is reproducible and different seeds differ", async () => {
    const sample = (seed: number) =>
      run(engine, request(PROMPTS[1]!, { temperature: 1, topP: 0.95, topK: 40, seed, maxTokens: 24 }));
    const a = await sample(42);
    const b = await sample(42);
    expect(b.text).toBe(a.text);
    const others = await Promise.all([1, 2, 3].map(sample));
    expect(others.some((o) => o.text !== a.text)).toBe(true);
  });

  it("batch 4 produces exactly the batch-1 outputs, in one decode per step", async () => {
    const greedy = PROMPTS.map((p) => request(p, { maxTokens: 32 }));
    const seeded = PROMPTS.map((p, i) => request(p, { maxTokens: 32, temperature: 0.8, seed: 100 + i }));
    const steps = engine.stats().decodeSteps;
    const batched = await Promise.all(greedy.map((r) => run(engine, r)));
    const batchedSteps = engine.stats().decodeSteps - steps;
    const batchedSeeded = await Promise.all(seeded.map((r) => run(engine, r)));
    const sequential: Run[] = [];
    for (const r of [...greedy, ...seeded]) sequential.push(await run(single, r));
    expect(batched.map((r) => r.text)).toEqual(sequential.slice(0, 4).map((r) => r.text));
    expect(batchedSeeded.map((r) => r.text)).toEqual(sequential.slice(4).map((r) => r.text));
    // 4 rows × 31 decoded tokens each (the first comes from the prompt pass) share the steps.
    expect(batchedSteps).toBeLessThanOrEqual(40);
    const stats = engine.stats();
    expect(stats.decodeTokensPerSecond).toBeGreaterThan(0);
    expect(stats.prefillTokensPerSecond).toBeGreaterThan(0);
    expect(stats.busySlots).toBe(0);
  });

  it("long prompts joining a running batch sample exactly as they would alone", async () => {
    // Prompts past 512 KV cells and several prefill chunks, arriving while other rows decode. Two
    // threads: with one, ggml's flash-attention KV split (which would break this) never splits.
    const batchedEngine = makeEngine({ maxBatch: 4, threads: 2, validator: false });
    const alone = makeEngine({ maxBatch: 1, threads: 2, validator: false });
    await Promise.all([batchedEngine.load(tiny), alone.load(tiny)]);
    const long = (n: number) => Array.from({ length: n }, (_, i) => `${PROMPTS[i % 4]} ${i}`).join(". ");
    const reqs = [
      request(PROMPTS[0]!, { maxTokens: 48, temperature: 0.9, seed: 1 }),
      request(long(30), { maxTokens: 24, temperature: 0.9, seed: 2 }),
      request(PROMPTS[1]!, { maxTokens: 40, temperature: 0, seed: 3 }),
      request(long(36), { maxTokens: 24, temperature: 0.7, seed: 4 }),
      request(
        { kind: "chat", messages: [{ role: "user", content: long(20) }] },
        { maxTokens: 16, temperature: 1, seed: 5 },
      ),
    ];
    const texts: string[] = reqs.map(() => "");
    const results: Promise<GenerationResult>[] = [];
    const start = (i: number): void => {
      if (i >= reqs.length || results[i] !== undefined) return;
      // Each arrival is triggered by progress (or the end) of the previous request.
      results[i] = batchedEngine.generate(reqs[i]!, (e) => {
        texts[i] += e.text;
        if (texts[i]!.length > 4) start(i + 1);
      }).done;
      results[i]!.then(
        () => start(i + 1),
        () => start(i + 1),
      );
    };
    start(0);
    await results[0];
    for (let i = 1; i < reqs.length; i++) {
      while (results[i] === undefined) await new Promise((r) => setTimeout(r, 1));
      await results[i];
    }
    const batched = await Promise.all(results);
    expect(Math.max(...batched.map((r) => r.promptTokens))).toBeGreaterThan(520);
    for (const [i, r] of reqs.entries()) {
      const solo = await run(alone, r);
      expect(solo.result).toEqual(batched[i]);
      expect(texts[i]).toBe(solo.text);
    }
    await Promise.all([batchedEngine.close(), alone.close()]);
  });

  it("stop sequences end generation, are not emitted, and match across token boundaries", async () => {
    const free = await run(engine, request(PROMPTS[2]!, { maxTokens: 40 }));
    // Straddle the boundary between two streamed pieces.
    const k = free.events.findIndex(
      (e, i) => i > 0 && e.text.length >= 2 && free.events[i - 1]!.text.length >= 2,
    );
    expect(k).toBeGreaterThan(0);
    const stop = free.events[k - 1]!.text.slice(-2) + free.events[k]!.text.slice(0, 2);
    const at = free.text.indexOf(stop);
    const stopped = await run(
      engine,
      request(PROMPTS[2]!, { maxTokens: 40, stop: [stop, "never-generated-xyz"] }),
    );
    expect(stopped.result.finishReason).toBe("stop");
    expect(stopped.text).toBe(free.text.slice(0, at));
    expect(stopped.text).not.toContain(stop);
  });

  it("cancel mid-stream frees the row at once: the queued request then runs", async () => {
    const seen: string[] = [];
    let cancelledAfter = -1;
    const first = single.generate(request(PROMPTS[0]!, { maxTokens: 400 }), (e) => {
      seen.push(e.text);
      if (seen.length === 3) {
        first.cancel();
        first.cancel(); // idempotent
        cancelledAfter = seen.length;
      }
    });
    const second = single.generate(request(PROMPTS[1]!, { maxTokens: 8 }), () => {});
    await new Promise((r) => setTimeout(r, 0));
    const r1 = await first.done;
    expect(r1.finishReason).toBe("cancelled");
    expect(seen.length).toBe(cancelledAfter);
    const r2 = await second.done;
    expect(r2).toMatchObject({ finishReason: "length", generatedTokens: 8 });
    expect(single.stats()).toMatchObject({ busySlots: 0, queueDepth: 0 });

    // Cancelling a request still waiting in the queue settles it too, without it ever running.
    const blocker = single.generate(request(PROMPTS[0]!, { maxTokens: 30 }), () => {});
    const waiting = single.generate(request(PROMPTS[1]!, { maxTokens: 30 }), () => {
      throw new Error("a cancelled queued request must not stream");
    });
    await new Promise((r) => setTimeout(r, 5));
    waiting.cancel();
    expect((await waiting.done).finishReason).toBe("cancelled");
    expect((await blocker.done).finishReason).toBe("length");
  });

  it("rejects prompt + max_tokens over the context before decoding anything", async () => {
    const before = engine.stats();
    const err = await rejection(engine.generate(request(PROMPTS[0]!, { maxTokens: 1020 }), () => {}).done);
    expect(err.code).toBe("context_length_exceeded");
    expect(err.httpStatus).toBe(400);
    expect(err.message).toMatch(/maximum context length is 1024 tokens/);
    const longPrompt = "word ".repeat(1200);
    const err2 = await rejection(engine.generate(request(longPrompt, { maxTokens: 1 }), () => {}).done);
    expect(err2.code).toBe("context_length_exceeded");
    const after = engine.stats();
    expect(after.decodeSteps).toBe(before.decodeSteps);
    expect(after.promptTokensProcessed).toBe(before.promptTokensProcessed);
    expect(after.tokensGenerated).toBe(before.tokensGenerated);
  });

  it("rejects bad requests with typed errors", async () => {
    expect((await rejection(engine.generate(request("hi", {}, "nope"), () => {}).done)).code).toBe(
      "model_not_found",
    );
    const bad = await rejection(engine.generate(request("hi", { temperature: -1 }), () => {}).done);
    expect(bad).toMatchObject({ code: "invalid_request", httpStatus: 400 });
    expect((await rejection(engine.generate(request("hi", { maxTokens: 0 }), () => {}).done)).code).toBe(
      "invalid_request",
    );
  });

  it("streams multi-byte UTF-8 intact", async () => {
    // The random model emits byte tokens freely; every event must be well-formed text on its own.
    const r = await run(engine, request("héllo 🌸 wörld", { maxTokens: 64, temperature: 1, seed: 7 }));
    for (const e of r.events) expect(Buffer.from(e.text, "utf8").toString("utf8")).toBe(e.text);
    expect(r.result.completionTokens).toBeGreaterThan(0);
  });
});

describe("llama engine options", () => {
  it("generates with a quantized KV cache (kvBits 8 and 4), identically at batch 2 and 1", async () => {
    for (const kvBits of [8, 4] as const) {
      const batched = makeEngine({ kvBits, maxBatch: 2, validator: false });
      const one = makeEngine({ kvBits, maxBatch: 1, validator: false });
      await batched.load(tiny);
      await one.load(tiny);
      const reqs = PROMPTS.slice(0, 2).map((p) => request(p, { maxTokens: 16 }));
      const together = await Promise.all(reqs.map((r) => run(batched, r)));
      for (const [i, r] of reqs.entries()) {
        const alone = await run(one, r);
        expect(together[i]!.result).toMatchObject({ finishReason: "length", generatedTokens: 16 });
        expect(together[i]!.text).toBe(alone.text);
      }
      await batched.close();
      await one.close();
    }
  });

  it("lowers each row's context to fit the memory budget, and enforces the lowered limit", async () => {
    const roomy = makeEngine({ maxContext: 2048, memoryBudgetBytes: 64 * 1024 ** 3, validator: false });
    await roomy.load(tiny);
    expect(roomy.contextLimit(tiny.id)).toBe(2048);
    await roomy.close();

    // Far too little memory: the context falls to the 256-token floor.
    const logs: string[] = [];
    const tight = makeEngine({
      maxContext: 2048,
      memoryBudgetBytes: 1,
      validator: false,
      onLog: (level, message) => logs.push(`${level} ${message}`),
    });
    await tight.load(tiny);
    expect(tight.contextLimit(tiny.id)).toBe(256);
    expect(logs.join("\n")).toMatch(/warn max context per row lowered from 2048 to 256 tokens/);
    const err = await rejection(tight.generate(request(PROMPTS[0]!, { maxTokens: 300 }), () => {}).done);
    expect(err.code).toBe("context_length_exceeded");
    expect((await run(tight, request(PROMPTS[0]!, { maxTokens: 8 }))).result.generatedTokens).toBe(8);
    await tight.close();
  });

  it('resolves threads "auto" per model at load, reports and logs the choice; an explicit count wins', async () => {
    const logs: string[] = [];
    // A 16-core machine of its own: tiny (~1 MiB) still gets one thread, a bigger file would get more.
    const auto = makeEngine({
      threads: "auto",
      topology: { logicalCpus: 32, physicalCores: 16, source: "test" },
      validator: false,
      onLog: (level, message) => logs.push(`${level} ${message}`),
    });
    expect(auto.threadsFor(tiny.id)).toBeUndefined();
    await auto.load(tiny);
    expect(auto.threadsFor(tiny.id)).toBe(1);
    expect(logs.join("\n")).toMatch(
      /info loaded tiny-qwen3: 4 rows x 1024 tokens, 1 CPU thread \(auto: 1 thread: [\d.]+ MiB of weights, one thread per 64 MiB \(16 physical cores\)\)/,
    );
    expect((await run(auto, request(PROMPTS[0]!, { maxTokens: 4 }))).result.generatedTokens).toBe(4);
    await auto.close();

    const explicit = makeEngine({ threads: 2, validator: false, onLog: (l, m) => logs.push(`${l} ${m}`) });
    await explicit.load(tiny);
    expect(explicit.threadsFor(tiny.id)).toBe(2);
    expect(logs.at(-1)).toMatch(/2 CPU threads \(set by --threads\)$/);
    await explicit.close();
    expect(() => makeEngine({ threads: 0 })).toThrow("threads must be a positive integer");
  });

  it("unloads an idle model and reloads it lazily on the next request", async () => {
    const engine = makeEngine({ idleTimeoutMinutes: 0.004, maxBatch: 1, validator: false }); // 240 ms
    const loads: ModelLoadEvent[] = [];
    engine.observe({ modelLoad: (event) => loads.push(event) });
    await engine.load(tiny);
    await engine.load(tiny); // loaded already: not a load
    const first = await run(engine, request(PROMPTS[0]!, { maxTokens: 6 }));
    const stats = engine.stats();
    expect(stats.totalSlots).toBe(1);
    expect(stats.kvCacheCapacityTokens).toBeGreaterThan(0);
    expect(stats.promptTokensProcessed).toBeGreaterThan(0);
    expect(stats.prefillSeconds).toBeGreaterThan(0);
    expect(stats.decodeSeconds).toBeGreaterThan(0);
    expect(stats.decodeSteps).toBeGreaterThan(0);
    expect(engine.stats().loadedModels).toEqual([tiny.id]);
    await new Promise((r) => setTimeout(r, 600));
    expect(engine.stats().loadedModels).toEqual([]);
    const again = await run(engine, request(PROMPTS[0]!, { maxTokens: 6 }));
    expect(again.text).toBe(first.text);
    expect(engine.stats().loadedModels).toEqual([tiny.id]);
    // The reload on first use is a load of its own, reported where it happens.
    expect(loads.map((l) => [l.model, l.outcome])).toEqual([
      [tiny.id, "loaded"],
      [tiny.id, "loaded"],
    ]);
    expect(loads.every((l) => l.seconds > 0)).toBe(true);
    await engine.unload(tiny.id);
    expect(engine.stats().loadedModels).toEqual([]);
    expect((await rejection(engine.generate(request("hi"), () => {}).done)).code).toBe("model_not_found");
  });

  it("refuses engine_busy past the queue depth", async () => {
    const engine = makeEngine({ maxBatch: 1, queueDepth: 1, validator: false });
    await engine.load(tiny);
    const running = engine.generate(request(PROMPTS[0]!, { maxTokens: 40 }), () => {});
    const queued = engine.generate(request(PROMPTS[1]!, { maxTokens: 4 }), () => {});
    const refused = engine.generate(request(PROMPTS[2]!, { maxTokens: 4 }), () => {});
    expect((await rejection(refused.done)).code).toBe("engine_busy");
    expect((await running.done).finishReason).toBe("length");
    expect((await queued.done).finishReason).toBe("length");
  });
});

describe("untrusted model files", () => {
  it("refuses malformed GGUFs without harming the process, and caches the verdict", async () => {
    const validator = new ModelValidator();
    const engine = makeEngine({ validator });

    // Truncated: caught by the bounded GGUF reader.
    const truncated = join(dir, "truncated.gguf");
    await synthesizeModel({ shape: "tiny", seed: 9, outPath: truncated });
    const { size } = await stat(truncated);
    await truncate(truncated, Math.floor(size / 2));
    const t = await rejection(
      engine.load({ ...tiny, id: "truncated", path: truncated, sha256: "0".repeat(64) }),
    );
    expect(t).toMatchObject({ code: "model_load_failed" });
    expect(t.message).toMatch(/truncated/);

    // Structurally valid, but llama.cpp aborts on it (embedding_length 0 → GGML_ASSERT → SIGABRT).
    const plan = planModel("tiny", "Q8_0", 1);
    const crasher = join(dir, "crasher.gguf");
    await writeGgufFile(crasher, {
      kv: plan.kv.map(
        (e): GgufKv => (e.key === "qwen3.embedding_length" ? { key: e.key, type: "u32", value: 0 } : e),
      ),
      tensors: plan.tensors,
    });
    const sha = "1".repeat(64);
    const c = await rejection(engine.load({ ...tiny, id: "crasher", path: crasher, sha256: sha }));
    expect(c.code).toBe("model_load_failed");
    expect(c.message).toMatch(/crashed llama\.cpp|SIGABRT|code 134/);
    expect((await validator.cached(sha))?.ok).toBe(false);
    const started = performance.now();
    await rejection(engine.load({ ...tiny, id: "crasher", path: crasher, sha256: sha }));
    expect(performance.now() - started).toBeLessThan(200); // cached: no second child
    expect((await rejection(engine.generate(request("hi", {}, "crasher"), () => {}).done)).code).toBe(
      "model_not_found",
    );

    // The engine still serves good models.
    await engine.load(tiny);
    expect((await run(engine, request(PROMPTS[0]!, { maxTokens: 4 }))).result.generatedTokens).toBe(4);
  });
});
