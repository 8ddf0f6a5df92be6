import { mkdir, mkdtemp, open, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readGgufMetadata } from "../gguf/index.js";
import { sha256File } from "../sha256-file.js";
import { MODEL_SHAPES } from "../synth/shapes.js";
import { planModel, synthesizeModel } from "../synth/synthesize.js";
import { bfloat16Bits, quantizeAffine, roundToDtype } from "./quantize.js";
import { readSafetensorsHeader, readSafetensorsTensor, type SafetensorsHeader } from "./safetensors.js";
import { planMlxCheckpoint, synthesizeMlxCheckpoint } from "./synthesize-checkpoint.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-mlx-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Config = Record<string, unknown> & {
  model_type: string;
  hidden_size: number;
  num_hidden_layers: number;
  intermediate_size: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  vocab_size: number;
  tie_word_embeddings: boolean;
  quantization: { group_size: number; bits: number };
};

/**
 * The parameters mlx-lm's Model has for a config, written from its model code (mlx_lm/models/qwen3.py
 * and llama.py): Qwen3Model/LlamaModel hold embed_tokens (nn.Embedding), layers[i] (self_attn with
 * q/k/v/o_proj, Qwen3's q_norm/k_norm over head_dim; mlp with gate/down/up_proj; input_layernorm,
 * post_attention_layernorm), norm; Model adds lm_head unless tie_word_embeddings. Then nn.quantize
 * (as load_model applies config["quantization"]) turns each Linear and Embedding into weight (uint32,
 * [out, in * bits / 32]), scales and biases ([out, in / group_size], the model's dtype).
 */
function expectedParameters(c: Config): Map<string, { dtype: string; shape: number[] }> {
  const out = new Map<string, { dtype: string; shape: number[] }>();
  const { group_size: g, bits } = c.quantization;
  const quantized = (path: string, outDim: number, inDim: number) => {
    // quantize_model's predicate: a layer whose input width the group size does not divide stays as it is.
    if (inDim % g !== 0) {
      out.set(`${path}.weight`, { dtype: "BF16", shape: [outDim, inDim] });
      return;
    }
    out.set(`${path}.weight`, { dtype: "U32", shape: [outDim, (inDim * bits) / 32] });
    out.set(`${path}.scales`, { dtype: "BF16", shape: [outDim, inDim / g] });
    out.set(`${path}.biases`, { dtype: "BF16", shape: [outDim, inDim / g] });
  };
  const norm = (name: string, size: number) => out.set(name, { dtype: "BF16", shape: [size] });
  const h = c.hidden_size;
  const hd = c.head_dim;
  quantized("model.embed_tokens", c.vocab_size, h);
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    quantized(`${p}.self_attn.q_proj`, c.num_attention_heads * hd, h);
    quantized(`${p}.self_attn.k_proj`, c.num_key_value_heads * hd, h);
    quantized(`${p}.self_attn.v_proj`, c.num_key_value_heads * hd, h);
    quantized(`${p}.self_attn.o_proj`, h, c.num_attention_heads * hd);
    if (c.model_type === "qwen3") {
      norm(`${p}.self_attn.q_norm.weight`, hd);
      norm(`${p}.self_attn.k_norm.weight`, hd);
    }
    quantized(`${p}.mlp.gate_proj`, c.intermediate_size, h);
    quantized(`${p}.mlp.down_proj`, h, c.intermediate_size);
    quantized(`${p}.mlp.up_proj`, c.intermediate_size, h);
    norm(`${p}.input_layernorm.weight`, h);
    norm(`${p}.post_attention_layernorm.weight`, h);
  }
  norm("model.norm.weight", h);
  if (!c.tie_word_embeddings) quantized("lm_head", c.vocab_size, h);
  return out;
}

const FILES = [
  "config.json",
  "generation_config.json",
  "model.safetensors",
  "model.safetensors.index.json",
  "special_tokens_map.json",
  "tokenizer.json",
  "tokenizer_config.json",
];

const cases = [
  { shape: "tiny", bits: 4, architecture: "Qwen3ForCausalLM" },
  { shape: "tiny-llama", bits: 8, architecture: "LlamaForCausalLM" },
] as const;

describe.each(cases)("synthesizeMlxCheckpoint($shape, $bits bits)", ({ shape, bits, architecture }) => {
  let out: string;
  let config: Config;
  let header: SafetensorsHeader;
  beforeAll(async () => {
    out = join(dir, `${shape}-${bits}`);
    await synthesizeMlxCheckpoint({ shape, seed: 5, outDir: out, bits });
    config = JSON.parse(await readFile(join(out, "config.json"), "utf8"));
    header = await readSafetensorsHeader(join(out, "model.safetensors"));
  });

  it("writes the files of an mlx-community checkpoint", async () => {
    expect((await readdir(out)).sort()).toEqual(FILES);
  });

  it("writes config.json with the shape and the quantization as mlx-lm does", () => {
    const s = MODEL_SHAPES[shape];
    expect(config).toMatchObject({
      architectures: [architecture],
      model_type: s.architecture,
      hidden_size: s.embeddingLength,
      num_hidden_layers: s.blockCount,
      intermediate_size: s.feedForwardLength,
      num_attention_heads: s.headCount,
      num_key_value_heads: s.headCountKv,
      head_dim: s.headDim,
      vocab_size: s.vocabSize,
      max_position_embeddings: s.contextLength,
      rms_norm_eps: s.rmsEps,
      rope_theta: s.ropeFreqBase,
      tie_word_embeddings: s.tiedEmbeddings,
      torch_dtype: "bfloat16",
      quantization: { group_size: 64, bits },
    });
    expect(config.quantization_config).toEqual(config.quantization);
    expect(Object.keys(config)).toEqual(Object.keys(config).sort());
    const tok = planModel(shape).kv;
    const bos = tok.find((e) => e.key === "tokenizer.ggml.bos_token_id")?.value;
    expect(config.bos_token_id).toBe(bos);
  });

  it("holds every tensor mlx-lm's model expects for that config, with its dtype and shape, and nothing else", () => {
    const expected = expectedParameters(config);
    const actual = new Map(header.tensors.map((t) => [t.name, { dtype: t.dtype, shape: t.shape }]));
    expect(new Set(actual.keys())).toEqual(new Set(expected.keys()));
    for (const [name, want] of expected) expect(actual.get(name), name).toEqual(want);
    expect(header.metadata).toEqual({ format: "mlx" });
  });

  it("indexes every tensor in model.safetensors.index.json", async () => {
    const index = JSON.parse(await readFile(join(out, "model.safetensors.index.json"), "utf8"));
    expect(Object.keys(index.weight_map)).toEqual(header.tensors.map((t) => t.name).sort());
    expect(new Set(Object.values(index.weight_map))).toEqual(new Set(["model.safetensors"]));
    expect(index.metadata.total_size).toBe(header.fileSize - header.dataOffset);
    expect(index.metadata.total_parameters).toBe(planModel(shape).parameterCount);
  });

  it("norm weights are bfloat16 ones", async () => {
    const norm = await readSafetensorsTensor(join(out, "model.safetensors"), header, "model.norm.weight");
    for (let i = 0; i < norm.length; i += 2) expect(norm.readUInt16LE(i)).toBe(0x3f80);
  });
});

async function hashes(path: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(path)).sort()) out[name] = await sha256File(join(path, name));
  return out;
}

describe("determinism", () => {
  it("same seed → byte-identical directory; another seed → other weights, the same tokenizer", async () => {
    const progress: number[] = [];
    const a = await synthesizeMlxCheckpoint({
      shape: "tiny",
      seed: 11,
      outDir: join(dir, "a"),
      bits: 4,
      onProgress: (p) => progress.push(p.bytesWritten / p.totalBytes),
    });
    await synthesizeMlxCheckpoint({ shape: "tiny", seed: 11, outDir: join(dir, "b"), bits: 4 });
    await synthesizeMlxCheckpoint({ shape: "tiny", seed: 12, outDir: join(dir, "c"), bits: 4 });
    expect(progress.at(-1)).toBe(1);
    const [ha, hb, hc] = await Promise.all(["a", "b", "c"].map((n) => hashes(join(dir, n))));
    expect(hb).toEqual(ha);
    expect(Object.fromEntries(a.files.map((f) => [f.path, f.sha256]))).toEqual(ha);
    expect(hc!["model.safetensors"]).not.toBe(ha!["model.safetensors"]);
    expect(hc!["tokenizer.json"]).toBe(ha!["tokenizer.json"]);
    await expect(
      synthesizeMlxCheckpoint({ shape: "tiny", seed: 11, outDir: join(dir, "a"), bits: 4 }),
    ).rejects.toThrow(/exists/);
  });
});

/** The F32 tensor `name` of a GGUF, as [rows, cols] values. */
async function ggufF32(path: string, name: string): Promise<Float32Array> {
  const meta = await readGgufMetadata(path);
  const t = meta.tensors.find((x) => x.name === name)!;
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(t.sizeBytes);
    await fh.read(buf, 0, buf.length, meta.dataOffset + t.offset);
    return new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4).slice();
  } finally {
    await fh.close();
  }
}

describe("the checkpoint holds the F32 GGUF's weights of the same seed", () => {
  const { headCount, headCountKv, feedForwardLength } = MODEL_SHAPES["tiny-llama"];
  it.each([
    ["tiny", "model.layers.1.self_attn.k_proj", "blk.1.attn_k.weight", 128, 0],
    ["tiny", "model.embed_tokens", "token_embd.weight", 128, 0],
    ["tiny-llama", "model.layers.0.mlp.down_proj", "blk.0.ffn_down.weight", feedForwardLength, 0],
    ["tiny-llama", "lm_head", "output.weight", 128, 0],
    // llama.cpp's converter permutes Llama's q/k rows per head (HF row j*hd/2 + i ↔ GGUF row 2i + j).
    ["tiny-llama", "model.layers.1.self_attn.q_proj", "blk.1.attn_q.weight", 128, headCount],
    ["tiny-llama", "model.layers.0.self_attn.k_proj", "blk.0.attn_k.weight", 128, headCountKv],
  ] as const)("%s: %s is %s in bfloat16, quantized", async (shape, path, gguf, cols, heads) => {
    const root = join(dir, `same-${shape}`);
    await mkdir(root, { recursive: true });
    const ckpt = join(root, "mlx");
    const file = join(root, "f32.gguf");
    await rm(ckpt, { recursive: true, force: true });
    await synthesizeMlxCheckpoint({ shape, seed: 9, outDir: ckpt, bits: 4 });
    await synthesizeModel({ shape, seed: 9, outPath: file, quantization: "F32" });
    const values = await ggufF32(file, gguf);
    const rows = values.length / cols;
    const hf = new Float32Array(values.length);
    const hd = heads > 0 ? rows / heads : 1;
    for (let r = 0; r < rows; r++) {
      const head = r - (r % hd);
      const k = r % hd;
      const src = heads > 0 ? head + 2 * (k % (hd / 2)) + Math.floor(k / (hd / 2)) : r;
      for (let c = 0; c < cols; c++) hf[r * cols + c] = roundToDtype(values[src * cols + c]!, "bfloat16");
    }
    const q = quantizeAffine(hf, rows, cols, { bits: 4, groupSize: 64 });
    const st = join(ckpt, "model.safetensors");
    const header = await readSafetensorsHeader(st);
    const weight = await readSafetensorsTensor(st, header, `${path}.weight`);
    expect(new Uint32Array(weight.buffer, weight.byteOffset, weight.length / 4)).toEqual(q.weight);
    const scales = await readSafetensorsTensor(st, header, `${path}.scales`);
    const biases = await readSafetensorsTensor(st, header, `${path}.biases`);
    expect(Array.from({ length: q.scales.length }, (_, i) => scales.readUInt16LE(i * 2))).toEqual(
      [...q.scales].map(bfloat16Bits),
    );
    expect(Array.from({ length: q.biases.length }, (_, i) => biases.readUInt16LE(i * 2))).toEqual(
      [...q.biases].map(bfloat16Bits),
    );
  });
});

describe("a shape whose widths the group size does not all divide", () => {
  it("leaves those layers unquantized in bfloat16, as nn.quantize's predicate does", async () => {
    const shape = {
      ...MODEL_SHAPES.tiny,
      name: "odd",
      embeddingLength: 96,
      feedForwardLength: 128,
      headDim: 16,
    };
    const out = join(dir, "odd");
    await synthesizeMlxCheckpoint({ shape, seed: 4, outDir: out, bits: 4 });
    const config = JSON.parse(await readFile(join(out, "config.json"), "utf8"));
    const st = join(out, "model.safetensors");
    const header = await readSafetensorsHeader(st);
    const actual = new Map(header.tensors.map((t) => [t.name, { dtype: t.dtype, shape: t.shape }]));
    expect(actual).toEqual(expectedParameters(config));
    expect(actual.get("model.embed_tokens.weight")).toEqual({ dtype: "BF16", shape: [512, 96] });
    expect(actual.get("model.layers.0.self_attn.o_proj.weight")).toEqual({ dtype: "U32", shape: [96, 8] });
    const gguf = join(dir, "odd.gguf");
    await synthesizeModel({ shape, seed: 4, outPath: gguf, quantization: "F32" });
    const values = await ggufF32(gguf, "token_embd.weight");
    const embed = await readSafetensorsTensor(st, header, "model.embed_tokens.weight");
    expect(Array.from({ length: values.length }, (_, i) => embed.readUInt16LE(i * 2))).toEqual(
      [...values].map(bfloat16Bits),
    );
  });
});

describe("planMlxCheckpoint", () => {
  it("plans the real shapes (metadata only), counting parameters as mlx-lm and the GGUF synthesizer do", () => {
    const qwen = planMlxCheckpoint("qwen3-0.6b", 4);
    expect(qwen.parameterCount).toBe(596_049_920);
    expect(qwen.tensors.filter((t) => t.name.endsWith("q_norm.weight"))).toHaveLength(28);
    expect(qwen.tensors.find((t) => t.name === "model.embed_tokens.weight")?.shape).toEqual([151936, 128]);
    const llama = planMlxCheckpoint("llama-3.2-1b", 8);
    expect(llama.parameterCount).toBe(1_235_814_400);
    expect(llama.tensors.some((t) => t.name.startsWith("lm_head"))).toBe(false);
    expect(llama.tensors.find((t) => t.name === "model.layers.0.mlp.down_proj.scales")?.shape).toEqual([
      2048, 128,
    ]);
    expect(() => planMlxCheckpoint("tiny", 3 as 4)).toThrow(/bits must be 4 or 8/);
  });
});
