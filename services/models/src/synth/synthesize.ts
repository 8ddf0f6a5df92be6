/**
 * Writes GGUF models of real architectures with seeded random weights and an embedded tokenizer and
 * chat template. Same shape, seed and quantization → byte-identical file. Tensors are generated and
 * written chunk by chunk, so memory stays flat whatever the model size.
 */
import { POOLING_TYPE } from "../embeddings/embedding-model.js";
import {
  encodeGgufHeader,
  GgmlType,
  type GgufKv,
  type GgufTensorSource,
  type GgufWriteProgress,
  ggmlTensorBytes,
  layoutTensors,
  writeGgufFile,
} from "../gguf/index.js";
import { architectureKv, tokenizerKv } from "./metadata.js";
import { float16Bits, INT8_STD, int8WeightValues, tensorStream } from "./random.js";
import { isModelShapeName, MODEL_SHAPES, type ModelShape, type ModelShapeName } from "./shapes.js";
import { buildTokenizer, embeddingTokenizer, type TokenizerSpec } from "./tokenizer.js";

export type SynthQuantization = "F32" | "F16" | "Q8_0" | "Q4_0";
export const SYNTH_QUANTIZATIONS: readonly SynthQuantization[] = ["F32", "F16", "Q8_0", "Q4_0"];

const FILE_TYPE: Record<SynthQuantization, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7 };
const WEIGHT_TYPE: Record<SynthQuantization, number> = {
  F32: GgmlType.F32,
  F16: GgmlType.F16,
  Q4_0: GgmlType.Q4_0,
  Q8_0: GgmlType.Q8_0,
};

export interface SynthesizeOptions {
  shape: ModelShapeName | ModelShape;
  seed: number;
  outPath: string;
  /** Default "Q8_0". */
  quantization?: SynthQuantization;
  onProgress?: (progress: GgufWriteProgress) => void;
}

export interface SynthesizeResult {
  path: string;
  sizeBytes: number;
  /** Lowercase hex SHA-256 of the file. */
  sha256: string;
  architecture: string;
  contextLength: number;
  quantization: SynthQuantization;
  parameterCount: number;
  tensorCount: number;
  shape: ModelShape;
}

export interface ModelPlan {
  shape: ModelShape;
  quantization: SynthQuantization;
  kv: GgufKv[];
  tensors: GgufTensorSource[];
  parameterCount: number;
  /** Exact size of the file that synthesizeModel would write. */
  sizeBytes: number;
}

export function resolveShape(shape: ModelShapeName | ModelShape): ModelShape {
  if (typeof shape !== "string") return shape;
  if (!isModelShapeName(shape)) {
    throw new Error(
      `unknown model shape "${String(shape)}" (known: ${Object.keys(MODEL_SHAPES).join(", ")})`,
    );
  }
  return MODEL_SHAPES[shape];
}

function validateShape(s: ModelShape, quantization: SynthQuantization): void {
  const positive = [
    "embeddingLength",
    "blockCount",
    "feedForwardLength",
    "headCount",
    "headCountKv",
    "headDim",
    "vocabSize",
    "contextLength",
  ] as const;
  for (const key of positive) {
    if (!Number.isInteger(s[key]) || s[key] <= 0)
      throw new Error(`shape ${s.name}: ${key} must be a positive integer`);
  }
  if (s.headCount % s.headCountKv !== 0)
    throw new Error(`shape ${s.name}: head_count must be a multiple of head_count_kv`);
  if (s.headDim % 2 !== 0) throw new Error(`shape ${s.name}: head dimension must be even (RoPE)`);
  if (quantization === "Q8_0" || quantization === "Q4_0") {
    for (const [what, n] of [
      ["embedding_length", s.embeddingLength],
      ["feed_forward_length", s.feedForwardLength],
      ["head_count*head_dim", s.headCount * s.headDim],
    ] as const) {
      if (n % 32 !== 0)
        throw new Error(`shape ${s.name}: ${quantization} needs ${what} divisible by 32 (got ${n})`);
    }
  }
}

function metadata(
  s: ModelShape,
  quantization: SynthQuantization,
  tok: TokenizerSpec,
  seed: number,
): GgufKv[] {
  return [
    { key: "general.architecture", type: "string", value: s.architecture },
    { key: "general.type", type: "string", value: "model" },
    { key: "general.name", type: "string", value: s.displayName },
    {
      key: "general.description",
      type: "string",
      value: `Synthetic ${s.name} with random weights (seed ${seed})`,
    },
    { key: "general.file_type", type: "u32", value: FILE_TYPE[quantization] },
    { key: "general.quantization_version", type: "u32", value: 2 },
    { key: "general.alignment", type: "u32", value: 32 },
    ...architectureKv(s),
    // What llama.cpp's convert script writes for a sentence-transformers model's Pooling module.
    ...(s.pooling === undefined
      ? []
      : [{ key: `${s.architecture}.pooling_type`, type: "u32", value: POOLING_TYPE[s.pooling] } as const]),
    ...tokenizerKv(tok),
  ];
}

const CHUNK_BYTES = 4 * 1024 * 1024;
/** Standard deviation of a uniform nibble in [0, 15]. */
const NIBBLE_STD = Math.sqrt((16 * 16 - 1) / 12);

/** A tensor whose every element is `value` (norm weights), in F32. */
function constantF32(name: string, dims: number[], value: number): GgufTensorSource {
  return {
    name,
    dims,
    type: GgmlType.F32,
    *chunks() {
      const total = ggmlTensorBytes(GgmlType.F32, dims);
      const buf = Buffer.allocUnsafe(Math.min(total, CHUNK_BYTES));
      for (let i = 0; i < buf.length; i += 4) buf.writeFloatLE(value, i);
      for (let done = 0; done < total; ) {
        const n = Math.min(buf.length, total - done);
        yield buf.subarray(0, n);
        done += n;
      }
    },
  };
}

/** A tensor of seeded uniform random weights with standard deviation `std`, in the given type. */
function randomWeights(
  name: string,
  dims: number[],
  type: number,
  std: number,
  seed: number,
): GgufTensorSource {
  return {
    name,
    dims,
    type,
    *chunks() {
      const rng = tensorStream(seed, name);
      const total = ggmlTensorBytes(type, dims);
      if (type === GgmlType.Q8_0 || type === GgmlType.Q4_0) {
        const blockBytes = type === GgmlType.Q8_0 ? 34 : 18;
        const scale = float16Bits(type === GgmlType.Q8_0 ? std / INT8_STD : std / NIBBLE_STD);
        const lo = scale & 0xff;
        const hi = scale >>> 8;
        const perChunk = Math.max(1, Math.floor(CHUNK_BYTES / blockBytes)) * blockBytes;
        const buf = Buffer.allocUnsafe(Math.min(total, perChunk));
        for (let done = 0; done < total; ) {
          const n = Math.min(buf.length, total - done);
          rng.fillBytes(buf, 0, n);
          for (let o = 0; o < n; o += blockBytes) {
            buf[o] = lo;
            buf[o + 1] = hi;
          }
          yield buf.subarray(0, n);
          done += n;
        }
        return;
      }
      // F16 / F32: each element is a random int8 times a step, looked up from a 256-entry table
      // (typed arrays in host order; GGUF is little-endian, as are the hosts llama.cpp runs on).
      const values = int8WeightValues(std);
      const width = type === GgmlType.F16 ? 2 : 4;
      const elements = Math.min(total / width, Math.floor(CHUNK_BYTES / width));
      const random = new Uint8Array(elements);
      const out = new ArrayBuffer(elements * width);
      const bytes = new Uint8Array(out);
      const table16 = new Uint16Array(256);
      const table32 = new Float32Array(256);
      for (let b = 0; b < 256; b++) {
        table16[b] = float16Bits(values[b]!);
        table32[b] = values[b]!;
      }
      const out16 = new Uint16Array(out);
      const out32 = width === 4 ? new Float32Array(out) : undefined;
      for (let done = 0; done < total; ) {
        const n = Math.min(bytes.length, total - done);
        const count = n / width;
        rng.fillBytes(random, 0, count);
        if (out32) for (let i = 0; i < count; i++) out32[i] = table32[random[i]!]!;
        else for (let i = 0; i < count; i++) out16[i] = table16[random[i]!]!;
        yield bytes.subarray(0, n);
        done += n;
      }
    },
  };
}

/** The GGUF metadata and tensor list for a shape (nothing is generated until the tensors' chunks are read). */
export function planModel(
  shapeOrName: ModelShapeName | ModelShape,
  quantization: SynthQuantization = "Q8_0",
  seed = 0,
): ModelPlan {
  const s = resolveShape(shapeOrName);
  if (!SYNTH_QUANTIZATIONS.includes(quantization))
    throw new Error(`unsupported quantization ${quantization}`);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
    throw new Error("seed must be an integer in [0, 2^32)");
  validateShape(s, quantization);
  const vocabulary = buildTokenizer(s.tokenizer, s.vocabSize, s.minimalSpecials);
  const tok = s.pooling === undefined ? vocabulary : embeddingTokenizer(vocabulary);
  const wt = WEIGHT_TYPE[quantization];
  const d = s.embeddingLength;
  const qDim = s.headCount * s.headDim;
  const kvDim = s.headCountKv * s.headDim;
  const tensors: GgufTensorSource[] = [
    randomWeights("token_embd.weight", [d, s.vocabSize], wt, s.initStd, seed),
    constantF32("output_norm.weight", [d], 1),
  ];
  if (!s.tiedEmbeddings) tensors.push(randomWeights("output.weight", [d, s.vocabSize], wt, s.initStd, seed));
  for (let i = 0; i < s.blockCount; i++) {
    const p = `blk.${i}.`;
    tensors.push(
      constantF32(`${p}attn_norm.weight`, [d], 1),
      randomWeights(`${p}attn_q.weight`, [d, qDim], wt, s.initStd, seed),
      randomWeights(`${p}attn_k.weight`, [d, kvDim], wt, s.initStd, seed),
      randomWeights(`${p}attn_v.weight`, [d, kvDim], wt, s.initStd, seed),
      randomWeights(`${p}attn_output.weight`, [qDim, d], wt, s.initStd, seed),
    );
    if (s.qkNorm) {
      tensors.push(
        constantF32(`${p}attn_q_norm.weight`, [s.headDim], 1),
        constantF32(`${p}attn_k_norm.weight`, [s.headDim], 1),
      );
    }
    tensors.push(
      constantF32(`${p}ffn_norm.weight`, [d], 1),
      randomWeights(`${p}ffn_gate.weight`, [d, s.feedForwardLength], wt, s.initStd, seed),
      randomWeights(`${p}ffn_up.weight`, [d, s.feedForwardLength], wt, s.initStd, seed),
      randomWeights(`${p}ffn_down.weight`, [s.feedForwardLength, d], wt, s.initStd, seed),
    );
  }
  const kv = metadata(s, quantization, tok, seed);
  const { infos, dataBytes } = layoutTensors(tensors);
  const sizeBytes = encodeGgufHeader(kv, infos).length + dataBytes;
  const parameterCount = tensors.reduce((sum, t) => sum + t.dims.reduce((a, b) => a * b, 1), 0);
  return { shape: s, quantization, kv, tensors, parameterCount, sizeBytes };
}

/** Synthesizes a model to `outPath` (atomically: written to a ".partial" file, then renamed). */
export async function synthesizeModel(options: SynthesizeOptions): Promise<SynthesizeResult> {
  const quantization = options.quantization ?? "Q8_0";
  const plan = planModel(options.shape, quantization, options.seed);
  const written = await writeGgufFile(options.outPath, {
    kv: plan.kv,
    tensors: plan.tensors,
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  return {
    path: options.outPath,
    sizeBytes: written.sizeBytes,
    sha256: written.sha256,
    architecture: plan.shape.architecture,
    contextLength: plan.shape.contextLength,
    quantization,
    parameterCount: plan.parameterCount,
    tensorCount: plan.tensors.length,
    shape: plan.shape,
  };
}
