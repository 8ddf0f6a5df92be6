/**
 * Writes MLX checkpoints of real architectures with seeded random weights: a directory laid out as
 * mlx-lm's `convert -q` writes one and mlx-community publishes it (config.json with the quantization,
 * model.safetensors and its index, the tokenizer's files, generation_config.json), so that an MLX
 * backend can be tested without a download. Same shape, seed, bits and group size → byte-identical
 * directory; tensors are generated and written block by block, so memory stays flat.
 *
 * The weights are the GGUF synthesizer's: each matrix draws from the stream of its GGUF tensor
 * (token_embd.weight, blk.N.attn_q.weight, ...) the values `models synth --quant F32` writes, rounded
 * to bfloat16 (the dtype of the Hugging Face checkpoints mlx-lm converts) and quantized as
 * mx.quantize does. Llama's q/k rows are put back in Hugging Face order (llama.cpp's converter
 * permutes them for its interleaved RoPE), so the checkpoint and the F32 GGUF of one seed are the
 * same model up to rounding: the two backends can be checked against each other. Typed arrays go to
 * the file in host order: like the GGUF synthesizer, this assumes a little-endian host.
 */
import { createHash } from "node:crypto";
import { mkdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { int8WeightValues, tensorStream, type Xoshiro128 } from "../synth/random.js";
import type { ModelShape, ModelShapeName } from "../synth/shapes.js";
import { resolveShape } from "../synth/synthesize.js";
import { buildTokenizer, type TokenizerSpec } from "../synth/tokenizer.js";
import { specialTokensMapJson, tokenizerConfigJson, tokenizerJson } from "./hf-tokenizer.js";
import { type AffineGroupSize, bfloat16Bits, quantizeAffine, roundToDtype } from "./quantize.js";
import {
  type SafetensorsDtype,
  type SafetensorsTensorSource,
  type SafetensorsWriteProgress,
  safetensorsTensorBytes,
  writeSafetensorsFile,
} from "./safetensors.js";

export type MlxBits = 4 | 8;
export const MLX_BITS: readonly MlxBits[] = [4, 8];
export const MLX_WEIGHTS_FILE = "model.safetensors";

export interface SynthesizeMlxOptions {
  shape: ModelShapeName | ModelShape;
  seed: number;
  /** Must not exist yet; written as `<outDir>.partial` and renamed when complete. */
  outDir: string;
  bits: MlxBits;
  /** Default 64 (mlx-lm's default, and mlx-community's). */
  groupSize?: AffineGroupSize;
  /** Progress over model.safetensors (the other files are a few MB at most). */
  onProgress?: (progress: SafetensorsWriteProgress) => void;
}

export interface MlxCheckpointFile {
  /** Relative to the checkpoint directory. */
  path: string;
  sizeBytes: number;
  sha256: string;
}

export interface SynthesizeMlxResult {
  dir: string;
  shape: ModelShape;
  bits: MlxBits;
  groupSize: AffineGroupSize;
  /** Sorted by path. */
  files: MlxCheckpointFile[];
  sizeBytes: number;
  /** As mlx-lm counts it: a quantized matrix counts its unquantized elements. */
  parameterCount: number;
  tensorCount: number;
}

/** A tensor of the checkpoint as its header lists it. */
export interface MlxTensorPlan {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
}

/** A weight matrix [out, in]: nn.Linear, or nn.Embedding (whose [vocab, hidden] quantizes alike). */
interface Matrix {
  kind: "matrix";
  /** The module's path, e.g. "model.layers.0.self_attn.q_proj". */
  path: string;
  /** The GGUF tensor whose random stream it draws from. */
  gguf: string;
  out: number;
  in: number;
  /** Heads whose rows go back from llama.cpp's order to Hugging Face's (Llama's q and k). */
  unpermuteHeads?: number;
}

interface Norm {
  kind: "norm";
  name: string;
  size: number;
}

/** The modules in mlx-lm's parameter order (models/qwen3.py and models/llama.py, Model.__init__). */
function modules(s: ModelShape): (Matrix | Norm)[] {
  const d = s.embeddingLength;
  const qDim = s.headCount * s.headDim;
  const kvDim = s.headCountKv * s.headDim;
  const llama = s.architecture === "llama";
  const out: (Matrix | Norm)[] = [
    { kind: "matrix", path: "model.embed_tokens", gguf: "token_embd.weight", out: s.vocabSize, in: d },
  ];
  const matrix = (path: string, gguf: string, o: number, i: number, heads?: number): Matrix =>
    heads === undefined
      ? { kind: "matrix", path, gguf, out: o, in: i }
      : { kind: "matrix", path, gguf, out: o, in: i, unpermuteHeads: heads };
  for (let i = 0; i < s.blockCount; i++) {
    const p = `model.layers.${i}.`;
    const b = `blk.${i}.`;
    out.push(
      matrix(`${p}self_attn.q_proj`, `${b}attn_q.weight`, qDim, d, llama ? s.headCount : undefined),
      matrix(`${p}self_attn.k_proj`, `${b}attn_k.weight`, kvDim, d, llama ? s.headCountKv : undefined),
      matrix(`${p}self_attn.v_proj`, `${b}attn_v.weight`, kvDim, d),
      matrix(`${p}self_attn.o_proj`, `${b}attn_output.weight`, d, qDim),
    );
    if (s.qkNorm) {
      out.push(
        { kind: "norm", name: `${p}self_attn.q_norm.weight`, size: s.headDim },
        { kind: "norm", name: `${p}self_attn.k_norm.weight`, size: s.headDim },
      );
    }
    out.push(
      matrix(`${p}mlp.gate_proj`, `${b}ffn_gate.weight`, s.feedForwardLength, d),
      matrix(`${p}mlp.down_proj`, `${b}ffn_down.weight`, d, s.feedForwardLength),
      matrix(`${p}mlp.up_proj`, `${b}ffn_up.weight`, s.feedForwardLength, d),
      { kind: "norm", name: `${p}input_layernorm.weight`, size: d },
      { kind: "norm", name: `${p}post_attention_layernorm.weight`, size: d },
    );
  }
  out.push({ kind: "norm", name: "model.norm.weight", size: d });
  if (!s.tiedEmbeddings) out.push(matrix("lm_head", "output.weight", s.vocabSize, d));
  return out;
}

/**
 * The checkpoint's tensors: nn.quantize replaces every Linear and Embedding whose input width is a
 * multiple of the group size (mlx_lm/utils.py quantize_model) with weight/scales/biases.
 */
export function planMlxCheckpoint(
  shape: ModelShapeName | ModelShape,
  bits: MlxBits,
  groupSize: AffineGroupSize = 64,
): { shape: ModelShape; tensors: MlxTensorPlan[]; parameterCount: number } {
  const s = resolveShape(shape);
  validate(s, bits, groupSize);
  const tensors: MlxTensorPlan[] = [];
  let parameterCount = 0;
  for (const m of modules(s)) {
    if (m.kind === "norm") {
      tensors.push({ name: m.name, dtype: "BF16", shape: [m.size] });
      parameterCount += m.size;
      continue;
    }
    parameterCount += m.out * m.in;
    if (m.in % groupSize !== 0) {
      tensors.push({ name: `${m.path}.weight`, dtype: "BF16", shape: [m.out, m.in] });
      continue;
    }
    tensors.push(
      { name: `${m.path}.weight`, dtype: "U32", shape: [m.out, (m.in * bits) / 32] },
      { name: `${m.path}.scales`, dtype: "BF16", shape: [m.out, m.in / groupSize] },
      { name: `${m.path}.biases`, dtype: "BF16", shape: [m.out, m.in / groupSize] },
    );
  }
  return { shape: s, tensors, parameterCount };
}

function validate(s: ModelShape, bits: number, groupSize: number): void {
  if (s.pooling !== undefined) {
    throw new Error(
      `shape ${s.name} is an embedding model: MLX checkpoints are written of generative shapes only (the mlx engine computes no embeddings)`,
    );
  }
  if (!MLX_BITS.includes(bits as MlxBits))
    throw new Error(`MLX checkpoints: bits must be 4 or 8 (got ${bits})`);
  if (groupSize !== 32 && groupSize !== 64 && groupSize !== 128)
    throw new Error(`MLX checkpoints: the group size must be 32, 64 or 128 (got ${groupSize})`);
  for (const key of [
    "embeddingLength",
    "blockCount",
    "feedForwardLength",
    "headCount",
    "headCountKv",
    "headDim",
    "vocabSize",
  ] as const) {
    if (!Number.isInteger(s[key]) || s[key] <= 0)
      throw new Error(`shape ${s.name}: ${key} must be a positive integer`);
  }
  if (s.headCount % s.headCountKv !== 0)
    throw new Error(`shape ${s.name}: head_count must be a multiple of head_count_kv`);
  if (s.headDim % 2 !== 0) throw new Error(`shape ${s.name}: head dimension must be even (RoPE)`);
}

/** A tensor's random bytes, read in any block sizes: the same bytes Xoshiro128.fillBytes gives the GGUF synthesizer's chunks. */
class ByteStream {
  private word = 0;
  private left = 0;
  constructor(private readonly rng: Xoshiro128) {}
  read(out: Uint8Array, n: number): void {
    let i = 0;
    while (i < n && this.left > 0) {
      out[i++] = this.word & 0xff;
      this.word >>>= 8;
      this.left--;
    }
    const whole = i + ((n - i) & ~3);
    if (whole > i) {
      this.rng.fillBytes(out, i, whole);
      i = whole;
    }
    if (i < n) {
      this.word = this.rng.next();
      this.left = 4;
      while (i < n) {
        out[i++] = this.word & 0xff;
        this.word >>>= 8;
        this.left--;
      }
    }
  }
}

const BLOCK_ELEMENTS = 1 << 20;

/**
 * The sources of one matrix. The packed weight is generated block of rows by block of rows; its
 * scales and biases (1/16 of its size at 4 bits, group 64) are kept until their tensors, which follow
 * it in the file, are written.
 */
function matrixSources(
  m: Matrix,
  s: ModelShape,
  seed: number,
  bits: MlxBits,
  groupSize: AffineGroupSize,
): SafetensorsTensorSource[] {
  const values = new Float32Array(256);
  const raw = int8WeightValues(s.initStd);
  for (let b = 0; b < 256; b++) values[b] = roundToDtype(raw[b]!, "bfloat16");
  const quantized = m.in % groupSize === 0;
  const unit = m.unpermuteHeads === undefined ? 1 : m.out / m.unpermuteHeads;
  const blockRows = Math.max(unit, Math.floor(BLOCK_ELEMENTS / m.in / unit) * unit);
  const groupsPerRow = m.in / groupSize;
  let scales: Buffer | undefined;
  let biases: Buffer | undefined;
  const name = `${m.path}.weight`;

  function* rows(): Generator<Float32Array> {
    const stream = new ByteStream(tensorStream(seed, m.gguf));
    const random = new Uint8Array(blockRows * m.in);
    const block = new Float32Array(blockRows * m.in);
    const ordered = unit > 1 ? new Float32Array(blockRows * m.in) : block;
    const half = unit / 2;
    for (let row = 0; row < m.out; row += blockRows) {
      const n = Math.min(blockRows, m.out - row) * m.in;
      stream.read(random, n);
      for (let i = 0; i < n; i++) block[i] = values[random[i]!]!;
      if (unit > 1) {
        // Hugging Face row j*half + i of a head is llama.cpp's row 2i + j (convert_hf_to_gguf permute).
        for (let r = 0; r < n / m.in; r++) {
          const head = r - (r % unit);
          const within = r % unit;
          const src = head + 2 * (within % half) + Math.floor(within / half);
          ordered.set(block.subarray(src * m.in, (src + 1) * m.in), r * m.in);
        }
      }
      yield ordered.subarray(0, n);
    }
  }

  if (!quantized) {
    return [
      {
        name,
        dtype: "BF16",
        shape: [m.out, m.in],
        *chunks() {
          const out = new Uint16Array(blockRows * m.in);
          for (const block of rows()) {
            for (let i = 0; i < block.length; i++) out[i] = bfloat16Bits(block[i]!);
            yield new Uint8Array(out.buffer, 0, block.length * 2);
          }
        },
      },
    ];
  }
  const groupShape = [m.out, groupsPerRow];
  const kept = (what: "scales" | "biases") =>
    ({
      name: `${m.path}.${what}`,
      dtype: "BF16",
      shape: groupShape,
      *chunks() {
        const bytes = what === "scales" ? scales : biases;
        if (!bytes) throw new Error(`${m.path}.${what} is written after ${name}`);
        yield bytes;
        if (what === "biases") scales = biases = undefined;
      },
    }) satisfies SafetensorsTensorSource;
  return [
    {
      name,
      dtype: "U32",
      shape: [m.out, (m.in * bits) / 32],
      *chunks() {
        const sc = Buffer.allocUnsafe(m.out * groupsPerRow * 2);
        const bi = Buffer.allocUnsafe(m.out * groupsPerRow * 2);
        const into = {
          weight: new Uint32Array((blockRows * m.in * bits) / 32),
          scales: new Float32Array(blockRows * groupsPerRow),
          biases: new Float32Array(blockRows * groupsPerRow),
        };
        let group = 0;
        for (const block of rows()) {
          const q = quantizeAffine(
            block,
            block.length / m.in,
            m.in,
            { bits, groupSize, dtype: "bfloat16" },
            into,
          );
          for (let g = 0; g < q.scales.length; g++, group++) {
            sc.writeUInt16LE(bfloat16Bits(q.scales[g]!), group * 2);
            bi.writeUInt16LE(bfloat16Bits(q.biases[g]!), group * 2);
          }
          yield new Uint8Array(q.weight.buffer, q.weight.byteOffset, q.weight.byteLength);
        }
        scales = sc;
        biases = bi;
      },
    },
    kept("scales"),
    kept("biases"),
  ];
}

function normSource(n: Norm): SafetensorsTensorSource {
  return {
    name: n.name,
    dtype: "BF16",
    shape: [n.size],
    *chunks() {
      const one = bfloat16Bits(1);
      const out = Buffer.allocUnsafe(n.size * 2);
      for (let i = 0; i < n.size; i++) out.writeUInt16LE(one, i * 2);
      yield out;
    },
  };
}

/** config.json as mlx-lm's save_config writes it: the Hugging Face config plus the quantization, keys sorted. */
function configJson(s: ModelShape, tok: TokenizerSpec, bits: MlxBits, groupSize: number): string {
  const quantization = { group_size: groupSize, bits, mode: "affine" };
  const qwen = s.architecture === "qwen3";
  const config: Record<string, unknown> = {
    architectures: [qwen ? "Qwen3ForCausalLM" : "LlamaForCausalLM"],
    attention_bias: false,
    attention_dropout: 0,
    bos_token_id: tok.bosId,
    eos_token_id: qwen ? tok.eosId : stopIds(tok),
    head_dim: s.headDim,
    hidden_act: "silu",
    hidden_size: s.embeddingLength,
    initializer_range: s.initStd,
    intermediate_size: s.feedForwardLength,
    max_position_embeddings: s.contextLength,
    model_type: s.architecture,
    num_attention_heads: s.headCount,
    num_hidden_layers: s.blockCount,
    num_key_value_heads: s.headCountKv,
    quantization,
    quantization_config: quantization,
    rms_norm_eps: s.rmsEps,
    // The GGUF synthesizer writes no RoPE scaling either: both files are the same model.
    rope_scaling: null,
    rope_theta: s.ropeFreqBase,
    tie_word_embeddings: s.tiedEmbeddings,
    torch_dtype: "bfloat16",
    use_cache: true,
    vocab_size: s.vocabSize,
    ...(qwen ? { max_window_layers: s.blockCount, sliding_window: null, use_sliding_window: false } : {}),
    ...(qwen ? {} : { mlp_bias: false, pretraining_tp: 1 }),
  };
  const sorted = Object.fromEntries(Object.entries(config).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return `${JSON.stringify(sorted, null, 4)}\n`;
}

/** The tokens generation stops at, as the families' generation configs list them. */
function stopIds(tok: TokenizerSpec): number[] {
  const texts =
    tok.family === "qwen" ? ["<|im_end|>", "<|endoftext|>"] : ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"];
  return texts.map((t) => tok.tokens.indexOf(t)).filter((id) => id >= 0);
}

/** generation_config.json, which mlx-lm copies from the source model: ids only (random weights have no sampling defaults). */
function generationConfigJson(tok: TokenizerSpec): string {
  const config: Record<string, unknown> = { bos_token_id: tok.bosId, eos_token_id: stopIds(tok) };
  if (tok.family === "qwen") config.pad_token_id = tok.padId;
  return `${JSON.stringify(config, null, 2)}\n`;
}

/** Synthesizes a checkpoint into `outDir` (a new directory). */
export async function synthesizeMlxCheckpoint(options: SynthesizeMlxOptions): Promise<SynthesizeMlxResult> {
  const groupSize = options.groupSize ?? 64;
  const { bits, seed } = options;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
    throw new Error("seed must be an integer in [0, 2^32)");
  const plan = planMlxCheckpoint(options.shape, bits, groupSize);
  const s = plan.shape;
  const exists = await stat(options.outDir).then(
    () => true,
    () => false,
  );
  if (exists) throw new Error(`${options.outDir} exists`);
  const tok = buildTokenizer(s.tokenizer, s.vocabSize, s.minimalSpecials);
  const partial = `${options.outDir}.partial`;
  await rm(partial, { recursive: true, force: true });
  await mkdir(partial, { recursive: true });
  try {
    const files: MlxCheckpointFile[] = [];
    const put = async (path: string, text: string): Promise<void> => {
      const bytes = Buffer.from(text, "utf8");
      await writeFile(join(partial, path), bytes);
      files.push({ path, sizeBytes: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") });
    };
    await put("config.json", configJson(s, tok, bits, groupSize));
    await put("generation_config.json", generationConfigJson(tok));
    await put("tokenizer.json", tokenizerJson(tok));
    await put("tokenizer_config.json", tokenizerConfigJson(tok, s.contextLength));
    await put("special_tokens_map.json", specialTokensMapJson(tok));
    const sources = modules(s).flatMap((m) =>
      m.kind === "norm" ? [normSource(m)] : matrixSources(m, s, seed, bits, groupSize),
    );
    const written = await writeSafetensorsFile(join(partial, MLX_WEIGHTS_FILE), {
      tensors: sources,
      metadata: { format: "mlx" },
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    files.push({ path: MLX_WEIGHTS_FILE, sizeBytes: written.sizeBytes, sha256: written.sha256 });
    const index = {
      metadata: {
        total_size: plan.tensors.reduce((sum, t) => sum + safetensorsTensorBytes(t.dtype, t.shape), 0),
        total_parameters: plan.parameterCount,
      },
      weight_map: Object.fromEntries(
        plan.tensors
          .map((t) => t.name)
          .sort()
          .map((n) => [n, MLX_WEIGHTS_FILE]),
      ),
    };
    await put(`${MLX_WEIGHTS_FILE}.index.json`, JSON.stringify(index, null, 4));
    await rename(partial, options.outDir);
    files.sort((a, b) => (a.path < b.path ? -1 : 1));
    return {
      dir: options.outDir,
      shape: s,
      bits,
      groupSize,
      files,
      sizeBytes: files.reduce((sum, f) => sum + f.sizeBytes, 0),
      parameterCount: plan.parameterCount,
      tensorCount: plan.tensors.length,
    };
  } catch (err) {
    await rm(partial, { recursive: true, force: true }).catch(() => {});
    throw err;
  }
}
