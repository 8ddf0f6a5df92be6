/**
 * The llama engine's embeddings on the synthesized tiny-embed model (Qwen3 converted as
 * Qwen3-Embedding is: last-token pooling, EOS appended), with real llama.cpp on the CPU: the vectors
 * against node-llama-cpp's own embedding context, the per-input counts against the tokenizer the
 * coordinator counts with, and the refusals.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ModelTokenizer, synthesizeModel } from "@darkbloom/models";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readModelFile } from "../../config/model-inventory.js";
import { PROMPTS, rejection, request as requestFor, tinyModel } from "../conformance.test-support.js";
import type { EmbeddingRequest, ModelFile } from "../engine.js";
import { NativeEngine } from "../native/native-engine.js";
import { LlamaEngine, type LlamaEngineOptions } from "./llama-engine.js";

let dir: string;
let embed: ModelFile;
let tiny: ModelFile;
let llama: Llama;
/** The tokenizer the coordinator counts with, opened on the same file. */
let counter: ModelTokenizer;
const engines: LlamaEngine[] = [];

function makeEngine(options: Partial<LlamaEngineOptions> = {}): LlamaEngine {
  const engine = new LlamaEngine({
    maxBatch: 2,
    maxContext: 512,
    threads: 1,
    prefillChunk: 64,
    idleTimeoutMinutes: 0,
    gpu: false,
    validator: false,
    ...options,
  });
  engines.push(engine);
  return engine;
}

let seq = 0;
const embedding = (texts: string[], more: Partial<EmbeddingRequest> = {}): EmbeddingRequest => ({
  id: `emb-${++seq}`,
  model: embed.id,
  inputs: texts.map((text) => ({ kind: "embedding", text })),
  ...more,
});

const norm = (v: Float32Array) => Math.sqrt(v.reduce((sum, x) => sum + x * x, 0));

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-embed-"));
  const path = join(dir, "tiny-embed.gguf");
  await synthesizeModel({ shape: "tiny-embed", seed: 1, outPath: path });
  embed = await readModelFile(path);
  tiny = await tinyModel(dir);
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
  counter = ModelTokenizer.of(await llama.loadModel({ modelPath: path, gpuLayers: 0 }), llama);
});

afterAll(async () => {
  await Promise.all(engines.map((e) => e.close()));
  await counter?.dispose();
  await llama?.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe("llama engine embeddings", () => {
  it("says which models it embeds: the GGUFs that declare a pooling type", async () => {
    expect(embed.embedding).toEqual({ pooling: "last", dimensions: 128 });
    const engine = makeEngine();
    expect(engine.embeds(embed)).toBe(true);
    expect(engine.embeds(tiny)).toBe(false);
    // Loaded, the file itself is asked (a ModelFile made without the inventory's reading).
    const { embedding: _, ...bare } = embed;
    expect(engine.embeds(bare)).toBe(false);
    await engine.load(bare);
    expect(engine.embeds(bare)).toBe(true);
    await engine.load(tiny);
    expect(engine.embeds(tiny)).toBe(false);
    expect(engine.unsupported(embed)).toBeUndefined();
    // An engine that computes no embeddings refuses to serve an embedding model at all (it writes no
    // completions), with the line the daemon logs.
    const native = new NativeEngine({ maxBatch: 1, maxContext: 256, threads: 1, idleTimeoutMinutes: 0 });
    expect(native.unsupported(embed)).toMatch(
      /is an embedding model and the native-llama engine computes no embeddings/,
    );
    expect(native.unsupported(tiny)).toBeUndefined();
    await native.close();
  });

  it("embeds each input as node-llama-cpp's embedding context does, unit length, counted as the coordinator counts", async () => {
    const engine = makeEngine({ validator: undefined });
    await engine.load(embed);
    const texts = [PROMPTS[0]!, PROMPTS[1]!, "héllo 🌸 wörld", PROMPTS[0]!];
    const result = await engine.embed(embedding(texts)).done;
    expect(result.embeddings).toHaveLength(4);
    expect(result.promptTokens).toEqual(
      texts.map((text) => counter.countPrompt({ kind: "embedding", text })),
    );
    // The text's tokens and the appended <|endoftext|>.
    expect(result.promptTokens[0]).toBe(counter.model.tokenize(texts[0]!).length + 1);
    for (const vector of result.embeddings) {
      expect(vector).toBeInstanceOf(Float32Array);
      expect(vector).toHaveLength(128);
      expect(norm(vector)).toBeCloseTo(1, 5);
    }
    // Deterministic: the same text, the same vector, within a request and across requests.
    expect(result.embeddings[3]).toEqual(result.embeddings[0]);
    const again = await engine.embed(embedding([texts[1]!])).done;
    expect(again.embeddings[0]).toEqual(result.embeddings[1]);
    expect(result.embeddings[1]).not.toEqual(result.embeddings[0]);
    expect(result.embeddings[2]).not.toEqual(result.embeddings[0]);

    // The reference: node-llama-cpp's embedding context on the text alone, normalized.
    const context = await counter.model.createEmbeddingContext({
      contextSize: 512,
      batchSize: 512,
      threads: 1,
    });
    try {
      for (const [i, text] of texts.entries()) {
        const raw = (await context.getEmbeddingFor(text)).vector;
        const length = Math.hypot(...raw);
        const reference = Float32Array.from(raw, (v) => v / length);
        const got = result.embeddings[i]!;
        for (let d = 0; d < 128; d++) expect(got[d]).toBeCloseTo(reference[d]!, 5);
      }
    } finally {
      await context.dispose();
    }
    const stats = engine.stats();
    expect(stats.requestsCompleted).toBe(2);
    expect(stats.promptTokensProcessed).toBe(
      result.promptTokens.reduce((a, b) => a + b, 0) + (again.promptTokens[0] ?? 0),
    );
    // `dimensions` equal to the model's own is accepted.
    const same = await engine.embed(embedding([texts[0]!], { dimensions: 128 })).done;
    expect(same.embeddings[0]).toEqual(result.embeddings[0]);
    // Shorter (Matryoshka): the first d values of the model's vector, normalized again.
    const short = (await engine.embed(embedding([texts[0]!], { dimensions: 32 })).done).embeddings[0]!;
    expect(short).toHaveLength(32);
    expect(norm(short)).toBeCloseTo(1, 5);
    const prefix = result.embeddings[0]!.subarray(0, 32);
    for (let d = 0; d < 32; d++) expect(short[d]).toBeCloseTo(prefix[d]! / norm(prefix), 6);
  });

  it("takes concurrent requests in turns, each in input order", async () => {
    const engine = makeEngine();
    await engine.load(embed);
    const singles = await Promise.all(PROMPTS.map((p) => engine.embed(embedding([p])).done));
    const [a, b] = await Promise.all([
      engine.embed(embedding([...PROMPTS])).done,
      engine.embed(embedding([...PROMPTS].reverse())).done,
    ]);
    expect(a.embeddings).toEqual(singles.map((s) => s.embeddings[0]));
    expect(b.embeddings).toEqual(singles.map((s) => s.embeddings[0]).reverse());
  });

  it("refuses a generative model, an input over the context, and dimensions over the model's", async () => {
    const engine = makeEngine({ maxContext: 256 });
    await engine.load(embed);
    await engine.load(tiny);
    const chat = await rejection(engine.embed({ ...embedding(["hello"]), model: tiny.id }).done);
    expect(chat).toMatchObject({ code: "invalid_request", httpStatus: 400 });
    expect(chat.message).toMatch(/not an embedding model/);

    const long = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    expect(counter.countPrompt({ kind: "embedding", text: long })).toBeGreaterThan(256);
    const tooLong = await rejection(engine.embed(embedding(["short", long])).done);
    expect(tooLong).toMatchObject({ code: "context_length_exceeded", httpStatus: 400 });
    expect(tooLong.message).toMatch(/input\[1\] has \d+ tokens/);

    const dims = await rejection(engine.embed(embedding(["hello"], { dimensions: 129 })).done);
    expect(dims).toMatchObject({ code: "invalid_request", httpStatus: 400 });
    expect(dims.message).toMatch(/'dimensions' must be at most 128/);

    const unknown = await rejection(engine.embed({ ...embedding(["hello"]), model: "nope" }).done);
    expect(unknown.code).toBe("model_not_found");
    const empty = await rejection(engine.embed(embedding([])).done);
    expect(empty.code).toBe("invalid_request");
    // Nothing was evaluated for any of them, and the model still embeds.
    expect(engine.stats().promptTokensProcessed).toBe(0);
    expect((await engine.embed(embedding(["hello"])).done).embeddings).toHaveLength(1);
    // An embedding model writes no completions, and so says it enforces no grammar.
    const generated = await rejection(
      engine.generate(requestFor(embed.id, PROMPTS[0]!, { maxTokens: 4 }), () => {}).done,
    );
    expect(generated).toMatchObject({ code: "invalid_request", httpStatus: 400 });
    expect(generated.message).toMatch(/is an embedding model/);
    expect(engine.constrains(embed)).toBe(false);
    expect(engine.constrains(tiny)).toBe(true);
  });

  it("cancel stops before the next input; the model keeps serving", async () => {
    const engine = makeEngine();
    await engine.load(embed);
    const job = engine.embed(embedding(Array.from({ length: 400 }, (_, i) => `input number ${i} of many`)));
    // Wait for an input to be evaluated, then cancel. On a loaded machine the timer may fire a few
    // inputs later: what counts is what was done when cancel was called.
    while (engine.stats().promptTokensProcessed === 0) await new Promise((r) => setTimeout(r, 1));
    const atCancel = engine.stats().promptTokensProcessed;
    job.cancel();
    job.cancel(); // idempotent
    const err = await rejection(job.done);
    expect(err.code).toBe("cancelled");
    await new Promise((r) => setTimeout(r, 50));
    // The input being evaluated when it was cancelled finishes; no other starts.
    const processed = engine.stats().promptTokensProcessed;
    const each = counter.countPrompt({ kind: "embedding", text: "input number 399 of many" });
    expect(processed).toBeLessThanOrEqual(atCancel + each);
    expect(processed).toBeLessThan(
      400 * counter.countPrompt({ kind: "embedding", text: "input number 0 of many" }),
    );
    await new Promise((r) => setTimeout(r, 50));
    expect(engine.stats().promptTokensProcessed).toBe(processed);
    expect(engine.stats()).toMatchObject({ requestsCancelled: 1, requestsFailed: 0 });
    expect((await engine.embed(embedding(["hello"])).done).embeddings).toHaveLength(1);
  });

  it("an idle embedding model is unloaded, never while it embeds, and reloaded by the next request", async () => {
    const engine = makeEngine({ idleTimeoutMinutes: 0.004 }); // 240 ms
    await engine.load(embed);
    const first = await engine.embed(embedding([PROMPTS[0]!])).done;
    await new Promise((r) => setTimeout(r, 600));
    expect(engine.stats().loadedModels).toEqual([]);
    // A long request keeps it loaded past the idle time.
    const many = Array.from({ length: 300 }, (_, i) => `text number ${i}`);
    const long = await engine.embed(embedding([PROMPTS[0]!, ...many])).done;
    expect(long.embeddings[0]).toEqual(first.embeddings[0]);
    expect(engine.stats().loadedModels).toEqual([embed.id]);
    await new Promise((r) => setTimeout(r, 600));
    expect(engine.stats().loadedModels).toEqual([]);
  });

  it("unload and close end embeddings in flight and free the embedding context", async () => {
    const engine = makeEngine();
    await engine.load(embed);
    const many = Array.from({ length: 200 }, (_, i) => `text ${i}`);
    const unloaded = engine.embed(embedding(many));
    while (engine.stats().promptTokensProcessed === 0) await new Promise((r) => setTimeout(r, 1));
    await engine.unload(embed.id);
    expect((await rejection(unloaded.done)).code).toBe("model_not_found");
    expect((await rejection(engine.embed(embedding(["hello"])).done)).code).toBe("model_not_found");

    await engine.load(embed);
    const closed = engine.embed(embedding(many));
    const waiting = engine.embed(embedding(["queued behind it"]));
    while (engine.stats().promptTokensProcessed < 10) await new Promise((r) => setTimeout(r, 1));
    await engine.close();
    expect((await rejection(closed.done)).code).toBe("cancelled");
    expect((await rejection(waiting.done)).code).toBe("cancelled");
    expect((await rejection(engine.embed(embedding(["hello"])).done)).code).toBe("engine_failed");
  });
});
