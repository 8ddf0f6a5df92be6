import { mkdtemp, open, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, type Llama, LlamaChatSession, LlamaCompletion, LlamaLogLevel } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { embeddingModelOf } from "../embeddings/embedding-model.js";
import {
  GgmlType,
  GgufFormatError,
  type GgufKv,
  ggufValue,
  readGgufMetadata,
  writeGgufFile,
} from "../gguf/index.js";
import { planMlxCheckpoint } from "../mlx/synthesize-checkpoint.js";
import { sha256File } from "../sha256-file.js";
import { float16Bits, float16Value, Xoshiro128 } from "./random.js";
import { MODEL_SHAPES } from "./shapes.js";
import { planModel, synthesizeModel } from "./synthesize.js";
import { buildBpeVocab } from "./tokenizer.js";

let dir: string;
let llama: Llama;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-synth-"));
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
});

afterAll(async () => {
  await llama?.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe("random and float16", () => {
  it("xoshiro is deterministic per seed and stream", () => {
    const a = new Xoshiro128(42, 1);
    const b = new Xoshiro128(42, 1);
    const c = new Xoshiro128(42, 2);
    const xs = Array.from({ length: 8 }, () => a.next());
    expect(Array.from({ length: 8 }, () => b.next())).toEqual(xs);
    expect(Array.from({ length: 8 }, () => c.next())).not.toEqual(xs);
  });

  it("converts floats to half precision", () => {
    expect(float16Bits(1)).toBe(0x3c00);
    expect(float16Bits(-2)).toBe(0xc000);
    expect(float16Bits(0)).toBe(0);
    expect(float16Bits(65504)).toBe(0x7bff);
    expect(float16Bits(1e6)).toBe(0x7c00);
    for (const v of [0.02, -0.0003, 2.71, 1e-6]) {
      expect(Math.abs(float16Value(float16Bits(v)) - v)).toBeLessThanOrEqual(Math.abs(v) * 1e-3 + 6e-8);
    }
  });
});

describe("GGUF writer and reader", () => {
  it("round-trips typed metadata, arrays and tensor infos", async () => {
    const kv: GgufKv[] = [
      { key: "general.architecture", type: "string", value: "llama" },
      { key: "llama.context_length", type: "u32", value: 4096 },
      { key: "t.u8", type: "u8", value: 255 },
      { key: "t.i8", type: "i8", value: -128 },
      { key: "t.u16", type: "u16", value: 65535 },
      { key: "t.i16", type: "i16", value: -32768 },
      { key: "t.i32", type: "i32", value: -123456 },
      { key: "t.f32", type: "f32", value: 0.5 },
      { key: "t.f64", type: "f64", value: Math.PI },
      { key: "t.u64", type: "u64", value: 2n ** 63n },
      { key: "t.i64", type: "i64", value: -(2n ** 40n) },
      { key: "t.bool", type: "bool", value: true },
      { key: "t.unicode", type: "string", value: "héllo ✓ 🌸" },
      { key: "t.strings", type: "array", itemType: "string", value: ["a", "", "Ġthe", "<|im_end|>"] },
      { key: "t.ints", type: "array", itemType: "i32", value: [1, -2, 3] },
      { key: "t.floats", type: "array", itemType: "f32", value: [0.25, -1.5] },
      { key: "t.empty", type: "array", itemType: "u32", value: [] },
    ];
    const tensors = [
      { name: "a", dims: [32, 3], type: GgmlType.Q8_0, fill: 7 },
      { name: "b", dims: [5], type: GgmlType.F32, fill: 1 },
      { name: "c", dims: [64, 2], type: GgmlType.F16, fill: 2 },
    ];
    const path = join(dir, "roundtrip.gguf");
    const written = await writeGgufFile(path, {
      kv,
      tensors: tensors.map((t) => ({
        name: t.name,
        dims: t.dims,
        type: t.type,
        *chunks() {
          const bytes = t.type === GgmlType.Q8_0 ? 34 * 3 : t.type === GgmlType.F32 ? 20 : 256;
          yield new Uint8Array(bytes).fill(t.fill);
        },
      })),
    });
    expect(written.sha256).toBe(await sha256File(path));
    const meta = await readGgufMetadata(path);
    expect(meta.version).toBe(3);
    expect(meta.kv).toEqual(
      kv.map((e) =>
        e.type === "u64" || e.type === "i64"
          ? { ...e, value: BigInt(e.value) }
          : e.type === "f32"
            ? { ...e, value: Math.fround(e.value) }
            : e,
      ),
    );
    expect(meta.tensors.map((t) => [t.name, t.dims, t.type, t.offset % 32])).toEqual([
      ["a", [32, 3], GgmlType.Q8_0, 0],
      ["b", [5], GgmlType.F32, 0],
      ["c", [64, 2], GgmlType.F16, 0],
    ]);
    expect(meta.architecture).toBe("llama");
    expect(meta.contextLength).toBe(4096);
    expect(meta.dataOffset % 32).toBe(0);
    // Tensor data lands at its offset.
    const file = await readFile(path);
    const c = meta.tensors[2]!;
    expect(file[meta.dataOffset + c.offset]).toBe(2);
    expect(file.length).toBe(meta.dataOffset + c.offset + c.sizeBytes);
  });

  it("rejects malformed and truncated files with GgufFormatError", async () => {
    const junk = join(dir, "junk.gguf");
    await writeFile(junk, "definitely not a model file, just some text");
    await expect(readGgufMetadata(junk)).rejects.toBeInstanceOf(GgufFormatError);

    const path = join(dir, "to-truncate.gguf");
    await synthesizeModel({ shape: "tiny", seed: 3, outPath: path });
    const { size } = await stat(path);
    await truncate(path, size - 1000);
    await expect(readGgufMetadata(path)).rejects.toThrow(/truncated/);
    await truncate(path, 200);
    await expect(readGgufMetadata(path)).rejects.toBeInstanceOf(GgufFormatError);

    // A string length far past the end of the file.
    const huge = join(dir, "huge-len.gguf");
    const fh = await open(huge, "w");
    const header = Buffer.alloc(40);
    header.writeUInt32LE(0x46554747, 0);
    header.writeUInt32LE(3, 4);
    header.writeBigUInt64LE(0n, 8);
    header.writeBigUInt64LE(1n, 16);
    header.writeBigUInt64LE(2n ** 62n, 24);
    await fh.write(header);
    await fh.close();
    await expect(readGgufMetadata(huge)).rejects.toThrow(/implausible/);
  });
});

describe("synthesizeModel", () => {
  it("is deterministic: same seed, byte-identical file; another seed differs", async () => {
    const a = await synthesizeModel({ shape: "tiny", seed: 11, outPath: join(dir, "a.gguf") });
    const b = await synthesizeModel({ shape: "tiny", seed: 11, outPath: join(dir, "b.gguf") });
    const c = await synthesizeModel({ shape: "tiny", seed: 12, outPath: join(dir, "c.gguf") });
    expect(a.sha256).toBe(b.sha256);
    expect(await sha256File(join(dir, "b.gguf"))).toBe(b.sha256);
    expect(c.sha256).not.toBe(a.sha256);
    expect(a.sizeBytes).toBeLessThan(1_500_000);
    expect(a.sizeBytes).toBe(planModel("tiny", "Q8_0", 11).sizeBytes);
  });

  it("writes the metadata llama.cpp needs", async () => {
    const path = join(dir, "meta.gguf");
    const progress: number[] = [];
    const result = await synthesizeModel({
      shape: "tiny",
      seed: 5,
      outPath: path,
      quantization: "F16",
      onProgress: (p) => progress.push(p.bytesWritten / p.totalBytes),
    });
    expect(progress.at(-1)).toBe(1);
    const meta = await readGgufMetadata(path);
    expect(meta.architecture).toBe("qwen3");
    expect(meta.contextLength).toBe(2048);
    expect(meta.quantization).toBe("F16");
    expect(meta.parameterCount).toBe(result.parameterCount);
    expect(ggufValue(meta, "qwen3.attention.key_length")).toBe(32);
    expect(ggufValue(meta, "tokenizer.ggml.model")).toBe("gpt2");
    expect((ggufValue(meta, "tokenizer.ggml.tokens") as string[]).length).toBe(512);
    expect(String(ggufValue(meta, "tokenizer.chat_template"))).toContain("<|im_start|>");
    const names = meta.tensors.map((t) => t.name);
    expect(names).toContain("blk.1.attn_q_norm.weight");
    expect(names).not.toContain("output.weight");
    expect(meta.tensors.find((t) => t.name === "blk.0.attn_norm.weight")?.type).toBe(GgmlType.F32);
  });

  it("writes tiny-embed as llama.cpp converts Qwen3-Embedding: last-token pooling, EOS appended", async () => {
    const path = join(dir, "embed-meta.gguf");
    await synthesizeModel({ shape: "tiny-embed", seed: 5, outPath: path });
    const meta = await readGgufMetadata(path);
    const tokens = ggufValue(meta, "tokenizer.ggml.tokens") as string[];
    expect(meta.architecture).toBe("qwen3");
    expect(meta.kv.find((e) => e.key === "qwen3.pooling_type")).toEqual({
      key: "qwen3.pooling_type",
      type: "u32",
      value: 3,
    });
    expect(ggufValue(meta, "tokenizer.ggml.add_eos_token")).toBe(true);
    expect(ggufValue(meta, "tokenizer.ggml.add_bos_token")).toBe(false);
    expect(tokens[Number(ggufValue(meta, "tokenizer.ggml.eos_token_id"))]).toBe("<|endoftext|>");
    expect(tokens[Number(ggufValue(meta, "tokenizer.ggml.eot_token_id"))]).toBe("<|im_end|>");
    expect(tokens[Number(ggufValue(meta, "tokenizer.ggml.bos_token_id"))]).toBe("<|endoftext|>");
    // The same weights and widths as tiny: only the metadata differs.
    expect(planModel("tiny-embed").parameterCount).toBe(planModel("tiny").parameterCount);
    // No MLX checkpoint of it: the mlx engine computes no embeddings.
    expect(() => planMlxCheckpoint("tiny-embed", 4)).toThrow(/tiny-embed is an embedding model/);
    // The generative shapes declare no pooling.
    const tiny = await readGgufMetadata(join(dir, "meta.gguf"));
    expect(tiny.kv.some((e) => e.key.endsWith(".pooling_type"))).toBe(false);
    expect(ggufValue(tiny, "tokenizer.ggml.add_eos_token")).toBeUndefined();
  });

  it("plans the real shapes of Qwen3-0.6B and Llama-3.2-1B (metadata only)", () => {
    const qwen = planModel("qwen3-0.6b");
    expect(qwen.parameterCount).toBe(596_049_920);
    expect(qwen.sizeBytes).toBeGreaterThan(600e6);
    expect(qwen.sizeBytes).toBeLessThan(660e6);
    expect(qwen.kv.find((e) => e.key === "qwen3.attention.key_length")?.value).toBe(128);
    const tokens = qwen.kv.find((e) => e.key === "tokenizer.ggml.tokens");
    expect(tokens?.type === "array" && tokens.value.length).toBe(MODEL_SHAPES["qwen3-0.6b"].vocabSize);
    const llamaPlan = planModel("llama-3.2-1b");
    expect(llamaPlan.parameterCount).toBe(1_235_814_400);
  });

  it("builds a vocabulary whose merges only produce known tokens", () => {
    const { tokens, merges } = buildBpeVocab(2000);
    expect(tokens.length).toBe(2000);
    expect(new Set(tokens).size).toBe(2000);
    const known = new Set(tokens);
    for (const m of merges) {
      const space = m.indexOf(" ", 1);
      expect(
        known.has(m.slice(0, space)) && known.has(m.slice(space + 1)) && known.has(m.replace(" ", "")),
      ).toBe(true);
    }
  });
});

describe("node-llama-cpp loads synthesized models", () => {
  it("generates text and chat from the tiny Qwen3 model", async () => {
    const path = join(dir, "tiny.gguf");
    await synthesizeModel({ shape: "tiny", seed: 1, outPath: path });
    const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
    try {
      expect(model.trainContextSize).toBe(2048);
      expect(model.detokenize(model.tokenize("Hello, world!"))).toBe("Hello, world!");
      const context = await model.createContext({ contextSize: 256, threads: 1 });
      const completion = new LlamaCompletion({ contextSequence: context.getSequence() });
      const text = await completion.generateCompletion("The quick brown fox", {
        maxTokens: 8,
        temperature: 0,
      });
      expect(typeof text).toBe("string");
      await context.dispose();

      const chatContext = await model.createContext({ contextSize: 256, threads: 1 });
      const session = new LlamaChatSession({ contextSequence: chatContext.getSequence() });
      const reply = await session.prompt("Say hello", { maxTokens: 8, temperature: 0 });
      expect(typeof reply).toBe("string");
      expect(session.chatWrapper.wrapperName).toMatch(/ChatML|Qwen|Jinja/);
      await chatContext.dispose();
    } finally {
      await model.dispose();
    }
  });

  it("loads tiny-embed as an embedding model and embeds with its EOS appended", async () => {
    const path = join(dir, "tiny-embed.gguf");
    await synthesizeModel({ shape: "tiny-embed", seed: 1, outPath: path });
    const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
    try {
      expect(embeddingModelOf(model.fileInfo)).toEqual({ pooling: "last", dimensions: 128 });
      expect(model.tokens.shouldAppendEosToken).toBe(true);
      expect(model.tokens.shouldPrependBosToken).toBe(false);
      expect(model.detokenize([model.tokens.eos!], true)).toBe("<|endoftext|>");
      const context = await model.createEmbeddingContext({ contextSize: 256, batchSize: 256, threads: 1 });
      const tokens = model.tokenize("The quick brown fox");
      expect(context.calculateInputLength(tokens)).toBe(tokens.length + 1);
      const a = await context.getEmbeddingFor(tokens);
      const b = await context.getEmbeddingFor("The quick brown fox");
      const other = await context.getEmbeddingFor("Hello, world!");
      expect(a.vector).toHaveLength(128);
      expect(a.vector.every((v) => Number.isFinite(v))).toBe(true);
      expect(b.vector).toEqual(a.vector);
      expect(other.vector).not.toEqual(a.vector);
      await context.dispose();
    } finally {
      await model.dispose();
    }
  });

  it("loads the tiny Llama model with the Llama 3 chat format", async () => {
    const path = join(dir, "tiny-llama.gguf");
    await synthesizeModel({ shape: "tiny-llama", seed: 2, outPath: path, quantization: "Q4_0" });
    const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
    try {
      // Llama 3.1's wrapper adds a default system preamble (knowledge/today dates, tool instructions).
      const context = await model.createContext({ contextSize: 1024, threads: 1 });
      const session = new LlamaChatSession({ contextSequence: context.getSequence() });
      const reply = await session.prompt("Say hello", { maxTokens: 8, temperature: 0 });
      expect(typeof reply).toBe("string");
      expect(session.chatWrapper.wrapperName).toMatch(/Llama|Jinja/);
      await context.dispose();
    } finally {
      await model.dispose();
    }
  });
});
