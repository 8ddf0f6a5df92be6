/**
 * The engine conformance suite: what every engine must do, run against each (llama-engine.test.ts,
 * native-engine.test.ts, mlx-engine.test.ts) on a synthesized tiny Qwen3 model (real llama.cpp or
 * MLX, CPU, one thread): the GGUF engines on a tiny GGUF, the mlx engine on the tiny MLX checkpoint of
 * the same shape (what differs is only the model's format, and the file the coordinator counts with).
 * Each engine must be consistent with itself; two engines need not produce the same text.
 * Not a test file itself (*.test-support.ts: excluded from the build, type-checked with the tests).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { choiceCompletionTokens, ModelTokenizer, synthesizeModel } from "@darkbloom/models";
import { formatGrammar, formatViolation, readResponseFormat } from "@darkbloom/models/structured";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { logprobsConformance } from "./conformance-logprobs.test-support.js";
import { toolsConformance } from "./conformance-tools.test-support.js";
import {
  type Engine,
  type EngineDevice,
  EngineError,
  type GenerationRequest,
  type GenerationResult,
  type ModelFile,
  type ModelLoadEvent,
  type SamplingOptions,
  type TokenEvent,
} from "./engine.js";
import type { ModelVetter } from "./model-host.js";

/** The options every engine takes (LlamaEngineOptions' meaning). */
export interface ConformanceOptions {
  maxBatch: number;
  maxContext: number;
  threads: number;
  prefillChunk: number;
  idleTimeoutMinutes: number;
  kvBits?: 4 | 8 | undefined;
  queueDepth?: number | undefined;
  validator?: ModelVetter | false | undefined;
}

export interface ConformanceTarget {
  /** Names the describe blocks. */
  name: string;
  /** Engine.backend. */
  backend: string;
  create(options: ConformanceOptions): Engine;
  /**
   * Threads of the long-prompt test's engines (default 1). The llama engine runs it on 2: with one,
   * ggml's flash-attention KV split (which would break batch invariance there) never splits.
   */
  longPromptThreads?: number;
  /**
   * Whether rows submitted together are sure to share decode steps (default true). Not the native
   * engine's: its engine thread starts decoding the first row while the JS thread still renders the
   * next prompts, so how many steps they share depends on the machine's load (its batching is
   * checked at the addon, native/src/llama.test.ts).
   */
  sharedStepsObservable?: boolean;
  /**
   * The tiny model the suite runs on, written into `dir` (default: the tiny GGUF, tinyModel). The
   * mlx engine serves checkpoints, so it gives the tiny MLX checkpoint.
   */
  model?: (dir: string) => Promise<ModelFile>;
  /**
   * The GGUF the coordinator counts the model's tokens with (default: the model file itself); for a
   * checkpoint, the vocabulary converted from its tokenizer.json, as the coordinator's catalog has it.
   */
  vocabulary?: (model: ModelFile, dir: string) => Promise<string>;
  /** What device() must say (default the CPU: the suite runs on CPU builds). */
  device?: EngineDevice;
}

/** A strict schema whose every string, array and number is bounded: a grammar that must end. */
const CARD = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 8 },
    // zod's int(): the safe-integer range.
    age: { type: "integer", minimum: -9007199254740991, maximum: 9007199254740991 },
    stars: { type: "integer", minimum: 1, maximum: 5 },
    weight: { type: "number", minimum: 0 },
    ok: { type: "boolean" },
    born: { type: "string", format: "date" },
    seen: { type: "string", format: "date-time" },
    id: { type: "string", format: "uuid" },
    tags: { type: "array", items: { enum: ["red", "green"] }, maxItems: 3 },
    nick: { type: ["string", "null"], maxLength: 5 },
    at: {
      type: "object",
      properties: { x: { type: "number" } },
      required: ["x"],
      additionalProperties: false,
    },
  },
  required: ["name", "age", "stars", "weight", "ok", "born", "seen", "id", "tags", "nick", "at"],
  additionalProperties: false,
};

export const PROMPTS = [
  "The quick brown fox",
  "Once upon a time, there was a little robot",
  "What is the capital of France?",
  "1, 2, 3, 10, 42 and 2048",
];

export interface Run {
  text: string;
  events: TokenEvent[];
  result: GenerationResult;
}

export async function run(engine: Engine, req: GenerationRequest): Promise<Run> {
  const events: TokenEvent[] = [];
  const generation = engine.generate(req, (e) => events.push(e));
  const result = await generation.done;
  return { text: events.map((e) => e.text).join(""), events, result };
}

export async function rejection(promise: Promise<unknown>): Promise<EngineError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(EngineError);
    return err as EngineError;
  }
  throw new Error("expected a rejection");
}

/** A synthesized tiny model file in `dir`. */
export async function tinyModel(dir: string): Promise<ModelFile> {
  const path = join(dir, "tiny.gguf");
  const synth = await synthesizeModel({ shape: "tiny", seed: 1, outPath: path });
  return {
    id: "tiny-qwen3",
    path,
    sizeBytes: synth.sizeBytes,
    quantization: synth.quantization,
    sha256: synth.sha256,
    architecture: synth.architecture,
    contextLength: synth.contextLength,
  };
}

let seq = 0;
/** A request for `model` (greedy, 24 tokens unless `sampling` says otherwise). */
export function request(
  model: string,
  input: string | GenerationRequest["input"],
  sampling: Partial<SamplingOptions> = {},
): GenerationRequest {
  return {
    id: `req-${++seq}`,
    model,
    input: typeof input === "string" ? { kind: "text", prompt: input } : input,
    sampling: { temperature: 0, topP: 1, topK: 0, stop: [], maxTokens: 24, ...sampling },
  };
}

/** Registers the conformance suite for `target`. */
export function engineConformance(target: ConformanceTarget): void {
  let dir: string;
  let tiny: ModelFile;
  const engines: Engine[] = [];
  const makeEngine = (options: Partial<ConformanceOptions> = {}): Engine => {
    const engine = target.create({
      maxBatch: 4,
      maxContext: 1024,
      threads: 1,
      prefillChunk: 64,
      idleTimeoutMinutes: 0,
      ...options,
    });
    engines.push(engine);
    return engine;
  };
  const req = (
    input: string | GenerationRequest["input"],
    sampling: Partial<SamplingOptions> = {},
    model = tiny.id,
  ): GenerationRequest => request(model, input, sampling);

  /** The tiny model's tokenizer as the coordinator has it (the checkpoint's converted vocabulary). */
  const openVocabulary = async (): Promise<ModelTokenizer> => {
    const llama = await getLlama({
      gpu: false,
      build: "never",
      logLevel: LlamaLogLevel.error,
      maxThreads: 1,
      // A vocabulary-only file (a checkpoint's) is first sized as a full load, whose missing
      // tensors node-llama-cpp reports as errors: nothing the test needs to see.
      logger: () => {},
    });
    return ModelTokenizer.open(llama, await (target.vocabulary?.(tiny, dir) ?? tiny.path));
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "darkbloom-conformance-"));
    tiny = await (target.model ?? tinyModel)(dir);
  });

  afterAll(async () => {
    await Promise.all(engines.map((e) => e.close()));
    await rm(dir, { recursive: true, force: true });
  });

  describe(`${target.name}: conformance on a tiny synthesized model`, () => {
    let engine: Engine;
    let single: Engine;

    beforeAll(async () => {
      engine = makeEngine({ maxBatch: 4 });
      single = makeEngine({ maxBatch: 1, validator: false });
      await engine.load(tiny); // vetted in a child process first
      await single.load(tiny);
    });

    it("reports its backend, its loaded model, and the CPU", async () => {
      expect(engine.backend).toBe(target.backend);
      expect(engine.stats().loadedModels).toEqual([tiny.id]);
      expect(await engine.device()).toEqual(target.device ?? { accelerator: "cpu", gpus: [] });
    });

    it("greedy decoding is deterministic and honours max_tokens", async () => {
      const a = await run(engine, req(PROMPTS[0]!, { maxTokens: 24 }));
      const b = await run(engine, req(PROMPTS[0]!, { maxTokens: 24 }));
      expect(a.result).toMatchObject({ finishReason: "length", generatedTokens: 24 });
      expect(a.result.promptTokens).toBeGreaterThan(3);
      expect(a.text.length).toBeGreaterThan(0);
      expect(b.text).toBe(a.text);
      expect(b.events).toEqual(a.events);
      expect(a.events.reduce((n, e) => n + e.tokens, 0)).toBeLessThanOrEqual(24);

      const short = await run(engine, req(PROMPTS[0]!, { maxTokens: 5 }));
      expect(short.result).toMatchObject({ finishReason: "length", generatedTokens: 5 });
      expect(a.text.startsWith(short.text)).toBe(true);
    });

    it("bills what the model's tokenizer makes of the text emitted, as the coordinator counts it, at most max_tokens", async () => {
      const counter = await openVocabulary();
      try {
        for (const [temperature, maxTokens] of [
          [0, 40],
          [1.5, 40],
          [1.5, 4],
        ] as const) {
          const r = await run(engine, req(PROMPTS[1]!, { maxTokens, temperature, seed: 7 }));
          expect(r.result.completionTokens).toBe(
            choiceCompletionTokens(counter.countText(r.text), maxTokens),
          );
          expect(r.result.completionTokens).toBeLessThanOrEqual(maxTokens);
          expect(r.result.promptTokens).toBe(counter.countPrompt({ kind: "text", prompt: PROMPTS[1]! }));
        }
      } finally {
        await counter.dispose();
      }
    });

    it("honours logit_bias: a +100 token is all it samples; banning greedy's first token changes the text", async () => {
      const vocabulary = await openVocabulary();
      try {
        const token = vocabulary.model.tokenize("hello", false)[0] as number;
        const piece = vocabulary.model.detokenize([token as never]);
        const forced = await run(engine, req(PROMPTS[0]!, { maxTokens: 6, logitBias: [[token, 100]] }));
        expect(forced.result).toMatchObject({ finishReason: "length", generatedTokens: 6 });
        expect(forced.text).toBe(piece.repeat(6));
        // Ban the token greedy decoding picks first (a prompt whose first token is a whole token of
        // its own, so that its id can be read back from its text): another token comes first.
        let checked = 0;
        for (const prompt of PROMPTS) {
          const first = await run(engine, req(prompt, { maxTokens: 1 }));
          const ids = vocabulary.model.tokenize(first.text, false);
          if (first.text.includes("\uFFFD") || ids.length !== 1) continue;
          const ban: [number, number] = [ids[0] as number, Number.NEGATIVE_INFINITY];
          const banned = await run(engine, req(prompt, { maxTokens: 1, logitBias: [ban] }));
          expect(banned.result.generatedTokens).toBe(1);
          expect(banned.text).not.toBe(first.text);
          checked++;
        }
        expect(checked).toBeGreaterThan(0);
        const outside = req(PROMPTS[0]!, { logitBias: [[10_000_000, 5]] });
        expect((await rejection(engine.generate(outside, () => {}).done)).code).toBe("invalid_request");
      } finally {
        await vocabulary.dispose();
      }
    });

    it("renders chat requests with the model's chat template", async () => {
      const chat = await run(
        engine,
        req(
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
        run(engine, req(PROMPTS[1]!, { temperature: 1, topP: 0.95, topK: 40, seed, maxTokens: 24 }));
      const a = await sample(42);
      const b = await sample(42);
      expect(b.text).toBe(a.text);
      const others = await Promise.all([1, 2, 3].map(sample));
      expect(others.some((o) => o.text !== a.text)).toBe(true);
    });

    it("batch 4 produces exactly the batch-1 outputs, in one decode per step", async () => {
      const greedy = PROMPTS.map((p) => req(p, { maxTokens: 32 }));
      const seeded = PROMPTS.map((p, i) => req(p, { maxTokens: 32, temperature: 0.8, seed: 100 + i }));
      const steps = engine.stats().decodeSteps ?? 0;
      const batched = await Promise.all(greedy.map((r) => run(engine, r)));
      const batchedSteps = (engine.stats().decodeSteps ?? 0) - steps;
      const batchedSeeded = await Promise.all(seeded.map((r) => run(engine, r)));
      const sequential: Run[] = [];
      for (const r of [...greedy, ...seeded]) sequential.push(await run(single, r));
      expect(batched.map((r) => r.text)).toEqual(sequential.slice(0, 4).map((r) => r.text));
      expect(batchedSeeded.map((r) => r.text)).toEqual(sequential.slice(4).map((r) => r.text));
      // 4 rows × 31 decoded tokens each (the first comes from the prompt pass) share the steps.
      if (target.sharedStepsObservable !== false) expect(batchedSteps).toBeLessThanOrEqual(40);
      const stats = engine.stats();
      expect(stats.decodeTokensPerSecond).toBeGreaterThan(0);
      expect(stats.prefillTokensPerSecond).toBeGreaterThan(0);
      expect(stats.busySlots).toBe(0);
    });

    it("long prompts joining a running batch sample exactly as they would alone", async () => {
      // Prompts past 512 KV cells and several prefill chunks, arriving while other rows decode.
      const threads = target.longPromptThreads ?? 1;
      const batchedEngine = makeEngine({ maxBatch: 4, threads, validator: false });
      const alone = makeEngine({ maxBatch: 1, threads, validator: false });
      await Promise.all([batchedEngine.load(tiny), alone.load(tiny)]);
      const long = (n: number) => Array.from({ length: n }, (_, i) => `${PROMPTS[i % 4]} ${i}`).join(". ");
      const reqs = [
        req(PROMPTS[0]!, { maxTokens: 48, temperature: 0.9, seed: 1 }),
        req(long(30), { maxTokens: 24, temperature: 0.9, seed: 2 }),
        req(PROMPTS[1]!, { maxTokens: 40, temperature: 0, seed: 3 }),
        req(long(36), { maxTokens: 24, temperature: 0.7, seed: 4 }),
        req(
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
      const free = await run(engine, req(PROMPTS[2]!, { maxTokens: 40 }));
      // Straddle the boundary between two streamed pieces.
      const k = free.events.findIndex(
        (e, i) => i > 0 && e.text.length >= 2 && free.events[i - 1]!.text.length >= 2,
      );
      expect(k).toBeGreaterThan(0);
      const stop = free.events[k - 1]!.text.slice(-2) + free.events[k]!.text.slice(0, 2);
      const at = free.text.indexOf(stop);
      const stopped = await run(
        engine,
        req(PROMPTS[2]!, { maxTokens: 40, stop: [stop, "never-generated-xyz"] }),
      );
      expect(stopped.result.finishReason).toBe("stop");
      expect(stopped.text).toBe(free.text.slice(0, at));
      expect(stopped.text).not.toContain(stop);
    });

    it("cancel mid-stream frees the row at once: the queued request then runs", async () => {
      const seen: string[] = [];
      let cancelledAfter = -1;
      const first = single.generate(req(PROMPTS[0]!, { maxTokens: 400 }), (e) => {
        seen.push(e.text);
        if (seen.length === 3) {
          first.cancel();
          first.cancel(); // idempotent
          cancelledAfter = seen.length;
        }
      });
      const second = single.generate(req(PROMPTS[1]!, { maxTokens: 8 }), () => {});
      await new Promise((r) => setTimeout(r, 0));
      const r1 = await first.done;
      expect(r1.finishReason).toBe("cancelled");
      expect(seen.length).toBe(cancelledAfter);
      const r2 = await second.done;
      expect(r2).toMatchObject({ finishReason: "length", generatedTokens: 8 });
      expect(single.stats()).toMatchObject({ busySlots: 0, queueDepth: 0 });

      // Cancelling a request still waiting in the queue settles it too, without it ever running.
      // Cancelled once the blocker streams (it holds the only row then), not after a fixed delay: a
      // fast engine may finish the blocker within any delay short enough to keep the test quick.
      let waitingStreamed = false;
      let cancelWaiting = (): void => {};
      let blockerStreamed = false;
      const blocker = single.generate(req(PROMPTS[0]!, { maxTokens: 200 }), () => {
        if (!blockerStreamed) {
          blockerStreamed = true;
          cancelWaiting();
        }
      });
      const waiting = single.generate(req(PROMPTS[1]!, { maxTokens: 30 }), () => {
        waitingStreamed = true;
      });
      cancelWaiting = () => waiting.cancel();
      if (blockerStreamed) waiting.cancel();
      expect((await waiting.done).finishReason).toBe("cancelled");
      expect((await blocker.done).finishReason).toBe("length");
      expect(waitingStreamed).toBe(false);
    });

    it("rejects prompt + max_tokens over the context before decoding anything", async () => {
      const before = engine.stats();
      const err = await rejection(engine.generate(req(PROMPTS[0]!, { maxTokens: 1020 }), () => {}).done);
      expect(err.code).toBe("context_length_exceeded");
      expect(err.httpStatus).toBe(400);
      expect(err.message).toMatch(/maximum context length is 1024 tokens/);
      const longPrompt = "word ".repeat(1200);
      const err2 = await rejection(engine.generate(req(longPrompt, { maxTokens: 1 }), () => {}).done);
      expect(err2.code).toBe("context_length_exceeded");
      const after = engine.stats();
      expect(after.decodeSteps).toBe(before.decodeSteps);
      expect(after.promptTokensProcessed).toBe(before.promptTokensProcessed);
      expect(after.tokensGenerated).toBe(before.tokensGenerated);
    });

    it("rejects bad requests with typed errors", async () => {
      expect((await rejection(engine.generate(req("hi", {}, "nope"), () => {}).done)).code).toBe(
        "model_not_found",
      );
      const bad = await rejection(engine.generate(req("hi", { temperature: -1 }), () => {}).done);
      expect(bad).toMatchObject({ code: "invalid_request", httpStatus: 400 });
      expect((await rejection(engine.generate(req("hi", { maxTokens: 0 }), () => {}).done)).code).toBe(
        "invalid_request",
      );
    });

    it("streams multi-byte UTF-8 intact", async () => {
      // The random model emits byte tokens freely; every event must be well-formed text on its own.
      const r = await run(engine, req("héllo 🌸 wörld", { maxTokens: 64, temperature: 1, seed: 7 }));
      for (const e of r.events) expect(Buffer.from(e.text, "utf8").toString("utf8")).toBe(e.text);
      expect(r.result.completionTokens).toBeGreaterThan(0);
    });

    it("decodes under a response_format grammar: JSON the schema accepts (or refuses the grammar)", async () => {
      const format = readResponseFormat({
        response_format: { type: "json_schema", json_schema: { name: "card", strict: true, schema: CARD } },
      });
      const grammar = formatGrammar(format!);
      if (!engine.constrains(tiny)) {
        const refused = await rejection(engine.generate(req(PROMPTS[0]!, { grammar }), () => {}).done);
        expect(refused).toMatchObject({ code: "invalid_request", httpStatus: 400 });
        return;
      }
      // Random weights: without the grammar this is never JSON. Every bound in CARD keeps the output
      // short, so each run ends by itself, at the grammar's end.
      const runs = await Promise.all(
        [1, 2, 3, 4, 5, 6].map((seed) =>
          run(engine, req(PROMPTS[seed % 4]!, { grammar, temperature: 1, seed, maxTokens: 600 })),
        ),
      );
      for (const r of runs) {
        expect(r.result.finishReason).toBe("stop");
        expect(formatViolation(format!, r.text), r.text).toBeUndefined();
      }
      expect(new Set(runs.map((r) => r.text)).size).toBeGreaterThan(1);
      // Greedy, and any JSON object.
      const object = formatGrammar({ type: "json_object" });
      const a = await run(engine, req(PROMPTS[1]!, { grammar: object, maxTokens: 40 }));
      const b = await run(single, req(PROMPTS[1]!, { grammar: object, maxTokens: 40 }));
      expect(b.text).toBe(a.text);
      expect(a.text).toMatch(/^\{/);
      const bad = await rejection(
        engine.generate(req(PROMPTS[0]!, { grammar: "root ::= undefined-rule" }), () => {}).done,
      );
      expect(bad).toMatchObject({ code: "invalid_request", httpStatus: 400 });
    });
  });

  describe(`${target.name}: conformance of tools`, () => {
    let engine: Engine;
    beforeAll(async () => {
      engine = makeEngine({ maxBatch: 4, validator: false });
      await engine.load(tiny);
    });
    toolsConformance({
      engine: () => engine,
      model: () => tiny,
      vocabulary: openVocabulary,
      req: (input, sampling) => req(input, sampling),
    });

    logprobsConformance({
      engine: () => engine,
      model: () => tiny,
      req: (input, sampling) => req(input, sampling),
    });
  });

  describe(`${target.name}: conformance of options`, () => {
    it("generates with a quantized KV cache (kvBits 8 and 4), identically at batch 2 and 1", async () => {
      for (const kvBits of [8, 4] as const) {
        const batched = makeEngine({ kvBits, maxBatch: 2, validator: false });
        const one = makeEngine({ kvBits, maxBatch: 1, validator: false });
        await batched.load(tiny);
        await one.load(tiny);
        const reqs = PROMPTS.slice(0, 2).map((p) => req(p, { maxTokens: 16 }));
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

    it("unloads an idle model and reloads it lazily on the next request", async () => {
      const engine = makeEngine({ idleTimeoutMinutes: 0.004, maxBatch: 1, validator: false }); // 240 ms
      const loads: ModelLoadEvent[] = [];
      engine.observe?.({ modelLoad: (event) => loads.push(event) });
      await engine.load(tiny);
      await engine.load(tiny); // loaded already: not a load
      const first = await run(engine, req(PROMPTS[0]!, { maxTokens: 6 }));
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
      const again = await run(engine, req(PROMPTS[0]!, { maxTokens: 6 }));
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
      expect((await rejection(engine.generate(req("hi"), () => {}).done)).code).toBe("model_not_found");
    });

    it("refuses engine_busy past the queue depth", async () => {
      const engine = makeEngine({ maxBatch: 1, queueDepth: 1, validator: false });
      await engine.load(tiny);
      const running = engine.generate(req(PROMPTS[0]!, { maxTokens: 40 }), () => {});
      const queued = engine.generate(req(PROMPTS[1]!, { maxTokens: 4 }), () => {});
      const refused = engine.generate(req(PROMPTS[2]!, { maxTokens: 4 }), () => {});
      expect((await rejection(refused.done)).code).toBe("engine_busy");
      expect((await running.done).finishReason).toBe("length");
      expect((await queued.done).finishReason).toBe("length");
    });
  });
}
