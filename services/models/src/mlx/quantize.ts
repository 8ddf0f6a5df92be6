/**
 * MLX's affine quantization (`mx.quantize(w, group_size, bits)`, mode "affine"), statement by
 * statement from its CPU kernel (mlx/backend/cpu/quantized.cpp, `quantize`), in float32 arithmetic
 * as that kernel computes whatever the weight's dtype. Per group of `groupSize` consecutive elements
 * of a row:
 *
 *   scale = max((max - min) / (2^bits - 1), 1e-7), negated unless |min| > |max|
 *   edge  = |min| > |max| ? min : max
 *   q0    = rint(edge / scale)
 *   if q0 != 0: scale = edge / q0, bias = edge    (so that 0 is exactly representable)
 *   else:       bias = 0
 *   code  = clamp(rint((w - bias) / scale), 0, 2^bits - 1)
 *
 * rint rounds half to even. Codes pack little-end first into uint32 words: element j of a word sits
 * at bit (j mod (32 / bits)) * bits. Scales and biases are stored in the weight's dtype (MLX's
 * bfloat16 conversion rounds to nearest even). Dequantization is code * scale + bias in that dtype.
 *
 * MLX's Metal kernel differs at the edges: it starts the group maximum at 0 and the minimum at the
 * dtype's largest value (so a group of only negative values gets max 0), and Metal's round() takes
 * halves away from zero; on random weights neither case arises in practice.
 */
import { float16Bits, float16Value } from "../synth/random.js";
import type { SafetensorsDtype } from "./safetensors.js";

/** The float dtypes MLX stores weights, scales and biases in. */
export type MlxFloatDtype = "bfloat16" | "float16" | "float32";
/** The widths that pack whole into uint32 words (MLX also has 3, 5 and 6, packed into bytes). */
export type AffineBits = 2 | 4 | 8;
export type AffineGroupSize = 32 | 64 | 128;

export const MLX_DTYPE_SAFETENSORS: Record<MlxFloatDtype, SafetensorsDtype> = {
  bfloat16: "BF16",
  float16: "F16",
  float32: "F32",
};

export interface AffineQuantizeOptions {
  bits: AffineBits;
  /** Default 64, mlx-lm's default. */
  groupSize?: AffineGroupSize;
  /** Default "bfloat16", what mlx-community's Qwen3 and Llama checkpoints hold. */
  dtype?: MlxFloatDtype;
}

/** A [rows, cols] matrix quantized: codes packed into words, and a scale and bias per group. */
export interface AffineQuantized {
  rows: number;
  cols: number;
  bits: AffineBits;
  groupSize: AffineGroupSize;
  dtype: MlxFloatDtype;
  /** [rows, cols * bits / 32] */
  weight: Uint32Array;
  /** [rows, cols / groupSize], the values the dtype stores. */
  scales: Float32Array;
  /** [rows, cols / groupSize], the values the dtype stores. */
  biases: Float32Array;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bfloat16 bits of a number, as MLX converts (mlx/types/bf16.h: round to nearest even, NaN → 0x7fc0). */
export function bfloat16Bits(value: number): number {
  f32[0] = value;
  if (Number.isNaN(f32[0])) return 0x7fc0;
  const x = u32[0]!;
  return ((x + ((x >>> 16) & 1) + 0x7fff) >>> 16) & 0xffff;
}

export function bfloat16Value(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0]!;
}

/** The value `dtype` stores for a number. */
export function roundToDtype(value: number, dtype: MlxFloatDtype): number {
  if (dtype === "bfloat16") return bfloat16Value(bfloat16Bits(value));
  if (dtype === "float16") return float16Value(float16Bits(value));
  return Math.fround(value);
}

/** The little-endian bytes of `values` in `dtype`, as a safetensors file holds them. */
export function encodeFloats(values: ArrayLike<number>, dtype: MlxFloatDtype): Uint8Array {
  const width = dtype === "float32" ? 4 : 2;
  const out = Buffer.allocUnsafe(values.length * width);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (dtype === "float32") out.writeFloatLE(v, i * 4);
    else out.writeUInt16LE(dtype === "bfloat16" ? bfloat16Bits(v) : float16Bits(v), i * 2);
  }
  return out;
}

/** C's rint in the default rounding mode: to nearest, halves to even. */
function rint(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const EPS = Math.fround(1e-7);
const RINT_MAGIC = 1.5 * 2 ** 52;

function check(rows: number, cols: number, length: number, bits: number, groupSize: number): void {
  if (bits !== 2 && bits !== 4 && bits !== 8)
    throw new Error(`affine quantization: unsupported bits ${bits}`);
  if (groupSize !== 32 && groupSize !== 64 && groupSize !== 128)
    throw new Error(`affine quantization: unsupported group size ${groupSize} (32, 64 or 128)`);
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols <= 0 || rows * cols !== length)
    throw new Error(`affine quantization: a [${rows}, ${cols}] matrix cannot hold ${length} elements`);
  if (cols % groupSize !== 0)
    throw new Error(
      `affine quantization: the row length ${cols} is not a multiple of the group size ${groupSize}`,
    );
}

/**
 * Quantizes the row-major [rows, cols] matrix `w` (float32 values: the weights as their dtype holds
 * them). `into` reuses arrays of at least the output's sizes (the synthesizer quantizes block by
 * block into the same buffers).
 */
export function quantizeAffine(
  w: Float32Array,
  rows: number,
  cols: number,
  options: AffineQuantizeOptions,
  into?: { weight: Uint32Array; scales: Float32Array; biases: Float32Array },
): AffineQuantized {
  const { bits } = options;
  const groupSize = options.groupSize ?? 64;
  const dtype = options.dtype ?? "bfloat16";
  check(rows, cols, w.length, bits, groupSize);
  const groups = (rows * cols) / groupSize;
  const perWord = 32 / bits;
  const weight = into
    ? into.weight.subarray(0, (rows * cols) / perWord)
    : new Uint32Array((rows * cols) / perWord);
  const scales = into ? into.scales.subarray(0, groups) : new Float32Array(groups);
  const biases = into ? into.biases.subarray(0, groups) : new Float32Array(groups);
  const nBins = 2 ** bits - 1;
  for (let g = 0, start = 0, word = 0; g < groups; g++, start += groupSize) {
    let min = Number.POSITIVE_INFINITY;
    let max = Number.NEGATIVE_INFINITY;
    for (let j = start; j < start + groupSize; j++) {
      const v = w[j]!;
      if (v > max) max = v;
      if (v < min) min = v;
    }
    const mask = Math.abs(min) > Math.abs(max);
    let scale = Math.max(Math.fround(Math.fround(max - min) / nBins), EPS);
    if (!mask) scale = -scale;
    const edge = mask ? min : max;
    const q0 = rint(Math.fround(edge / scale));
    let bias = 0;
    if (q0 !== 0) {
      scale = Math.fround(edge / q0);
      bias = edge;
    }
    for (let j = start; j < start + groupSize; j += perWord, word++) {
      let packed = 0;
      for (let k = 0; k < perWord; k++) {
        // rint without a branch (ties are common on synthesized weights, which lie on a grid):
        // adding 1.5 * 2^52 rounds to an integer, halves to even, and |t| <= 2^bits + 1 here.
        const q = Math.fround(Math.fround(w[j + k]! - bias) / scale) + RINT_MAGIC - RINT_MAGIC;
        packed |= Math.min(Math.max(q, 0), nBins) << (k * bits);
      }
      weight[word] = packed >>> 0;
    }
    scales[g] = roundToDtype(scale, dtype);
    biases[g] = roundToDtype(bias, dtype);
  }
  return { rows, cols, bits, groupSize, dtype, weight, scales, biases };
}

/** The codes of a quantized matrix, one per element (the packed words unpacked). */
export function affineCodes(q: Pick<AffineQuantized, "rows" | "cols" | "bits" | "weight">): Uint8Array {
  const perWord = 32 / q.bits;
  const mask = 2 ** q.bits - 1;
  const out = new Uint8Array(q.rows * q.cols);
  for (let i = 0; i < out.length; i++)
    out[i] = (q.weight[Math.floor(i / perWord)]! >>> ((i % perWord) * q.bits)) & mask;
  return out;
}

/**
 * The matrix a quantized one stands for, as MLX's CPU `dequantize` computes it: code * scale
 * rounded to the dtype, plus bias rounded to the dtype.
 */
export function dequantizeAffine(q: AffineQuantized): Float32Array {
  const codes = affineCodes(q);
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) {
    const g = Math.floor(i / q.groupSize);
    out[i] = roundToDtype(roundToDtype(codes[i]! * q.scales[g]!, q.dtype) + q.biases[g]!, q.dtype);
  }
  return out;
}
