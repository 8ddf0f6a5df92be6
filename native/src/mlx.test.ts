/**
 * The MLX addon on synthesized tiny checkpoints (real MLX, built against an installed MLX: on Linux
 * a local CPU build, DARKBLOOM_MLX_DIR=<its prefix> at `npm run build:native`). Skipped where the
 * addon is not built (CI has no MLX).
 */
import { spawnSync } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  affineCodes,
  bfloat16Value,
  type MlxBits,
  readSafetensorsHeader,
  readSafetensorsTensor,
  type SafetensorsHeader,
  synthesizeMlxCheckpoint,
} from "@darkbloom/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  MlxModel,
  type MlxModelConfig,
  type MlxScheduler,
  type MlxSchedulerOptions,
  mlxAvailable,
  mlxErrorCode,
  type NativeSamplingOptions,
  readMlxCheckpoint,
  type TokenLogprobs,
} from "./mlx.js";
import { generate, generateWithLogprobs, type Outcome, thrownCodeWith } from "./scheduler.test-support.js";
import { schedulerContract } from "./scheduler-contract.test-support.js";

function addonTestable(): boolean {
  if (mlxAvailable()) return true;
  if (process.env.DARKBLOOM_MLX_REQUIRED === "1") throw new Error("the MLX addon is not built");
  return false;
}

const GREEDY: NativeSamplingOptions = { temperature: 0 };

let dir: string;
let qwenDir: string;
let model: MlxModel;
const schedulers: MlxScheduler[] = [];

/** A deterministic prompt of `n` tokens that are not end-of-generation tokens. */
function prompt(seed: number, n: number): Int32Array {
  const out = new Int32Array(n);
  let x = seed * 2654435761 + 12345;
  for (let i = 0; i < n; i++) {
    do {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      out[i] = (x >>> 8) % model.info().nVocab;
    } while (model.isEog(out[i] ?? 0));
  }
  return out;
}

const PROMPTS = [5, 13, 9, 21].map((n, i) => ({ seed: i + 1, n }));
const promptOf = (i: number) => prompt(PROMPTS[i]?.seed ?? 0, PROMPTS[i]?.n ?? 1);

async function scheduler(options: MlxSchedulerOptions = {}): Promise<MlxScheduler> {
  const s = await model.createScheduler({ rows: 4, contextPerRow: 512, ...options });
  schedulers.push(s);
  return s;
}

const thrownCode = (fn: () => unknown) => thrownCodeWith(mlxErrorCode, fn);

/** Bans every end-of-generation token, so a row runs until its maxTokens (or a cancel). */
function eogBans(): Array<[number, number]> {
  return model.info().eosTokenIds.map((t) => [t, Number.NEGATIVE_INFINITY]);
}

// ---------------------------------------------------------------------------------------------------
// An independent reference: the checkpoint's forward pass in float64 with plain loops, straight from
// the safetensors bytes (mlx-lm's qwen3.py / llama.py written out; no MLX, no KV cache).

interface Matrix {
  rows: number;
  cols: number;
  data: Float64Array;
}

function floats(bytes: Buffer, dtype: string): Float64Array {
  const n = bytes.length / (dtype === "F32" ? 4 : 2);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (dtype === "F32") out[i] = bytes.readFloatLE(i * 4);
    else if (dtype === "BF16") out[i] = bfloat16Value(bytes.readUInt16LE(i * 2));
    else if (dtype === "F16") out[i] = halfValue(bytes.readUInt16LE(i * 2));
    else throw new Error(`unexpected dtype ${dtype}`);
  }
  return out;
}

function halfValue(h: number): number {
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  const v =
    e === 0
      ? m * 2 ** -24
      : e === 31
        ? m
          ? Number.NaN
          : Number.POSITIVE_INFINITY
        : (1 + m / 1024) * 2 ** (e - 15);
  return h & 0x8000 ? -v : v;
}

class Checkpoint {
  private constructor(
    readonly config: MlxModelConfig,
    private readonly files: { path: string; header: SafetensorsHeader }[],
  ) {}

  static async read(path: string): Promise<Checkpoint> {
    const config = await readMlxCheckpoint(path);
    const files = await Promise.all(
      config.files.map(async (p) => ({ path: p, header: await readSafetensorsHeader(p) })),
    );
    return new Checkpoint(config, files);
  }

  private async tensor(name: string): Promise<{ dtype: string; shape: number[]; bytes: Buffer } | undefined> {
    for (const f of this.files) {
      const info = f.header.tensors.find((t) => t.name === name);
      if (info)
        return {
          dtype: info.dtype,
          shape: info.shape,
          bytes: await readSafetensorsTensor(f.path, f.header, name),
        };
    }
    return undefined;
  }

  async vector(name: string): Promise<Float64Array> {
    const t = await this.tensor(name);
    if (!t) throw new Error(`no ${name}`);
    return floats(t.bytes, t.dtype);
  }

  /** A [out, cols] matrix, dequantized (codes * scale + bias per group) when quantized. */
  async matrix(prefix: string, cols: number): Promise<Matrix> {
    const w = await this.tensor(`${prefix}.weight`);
    if (!w) throw new Error(`no ${prefix}.weight`);
    const scales = await this.tensor(`${prefix}.scales`);
    if (!scales) return { rows: w.shape[0] ?? 0, cols: w.shape[1] ?? 0, data: floats(w.bytes, w.dtype) };
    const biases = await this.tensor(`${prefix}.biases`);
    if (!biases) throw new Error(`no ${prefix}.biases`);
    const rows = w.shape[0] ?? 0;
    const groups = scales.shape[1] ?? 0;
    const s = floats(scales.bytes, scales.dtype);
    const b = floats(biases.bytes, biases.dtype);
    const words = new Uint32Array(
      w.bytes.buffer.slice(w.bytes.byteOffset, w.bytes.byteOffset + w.bytes.length),
    );
    const bits = ((w.shape[1] ?? 0) * 32) / cols;
    if (bits !== 2 && bits !== 4 && bits !== 8) throw new Error(`${prefix}: ${bits} bits`);
    const groupSize = cols / groups;
    const codes = affineCodes({ rows, cols, bits, weight: words });
    const data = new Float64Array(rows * cols);
    for (let i = 0; i < data.length; i++) {
      const g = Math.floor(i / groupSize);
      data[i] = (codes[i] ?? 0) * (s[g] ?? 0) + (b[g] ?? 0);
    }
    return { rows, cols, data };
  }
}

interface RefLayer {
  q: Matrix;
  k: Matrix;
  v: Matrix;
  o: Matrix;
  gate: Matrix;
  up: Matrix;
  down: Matrix;
  qNorm?: Float64Array;
  kNorm?: Float64Array;
  inNorm: Float64Array;
  postNorm: Float64Array;
}

class Reference {
  private constructor(
    private readonly c: MlxModelConfig,
    private readonly embed: Matrix,
    private readonly head: Matrix,
    private readonly layers: RefLayer[],
    private readonly norm: Float64Array,
  ) {}

  static async load(path: string): Promise<Reference> {
    const ck = await Checkpoint.read(path);
    const c = ck.config;
    const layers: RefLayer[] = [];
    const d = c.hiddenSize;
    for (let i = 0; i < c.numHiddenLayers; i++) {
      const p = `model.layers.${i}.`;
      layers.push({
        q: await ck.matrix(`${p}self_attn.q_proj`, d),
        k: await ck.matrix(`${p}self_attn.k_proj`, d),
        v: await ck.matrix(`${p}self_attn.v_proj`, d),
        o: await ck.matrix(`${p}self_attn.o_proj`, c.numAttentionHeads * c.headDim),
        gate: await ck.matrix(`${p}mlp.gate_proj`, d),
        up: await ck.matrix(`${p}mlp.up_proj`, d),
        down: await ck.matrix(`${p}mlp.down_proj`, c.intermediateSize),
        ...(c.architecture === "qwen3"
          ? {
              qNorm: await ck.vector(`${p}self_attn.q_norm.weight`),
              kNorm: await ck.vector(`${p}self_attn.k_norm.weight`),
            }
          : {}),
        inNorm: await ck.vector(`${p}input_layernorm.weight`),
        postNorm: await ck.vector(`${p}post_attention_layernorm.weight`),
      });
    }
    const embed = await ck.matrix("model.embed_tokens", d);
    const head = c.tieWordEmbeddings ? embed : await ck.matrix("lm_head", d);
    return new Reference(c, embed, head, layers, await ck.vector("model.norm.weight"));
  }

  private static linear(m: Matrix, x: Float64Array): Float64Array {
    const y = new Float64Array(m.rows);
    for (let r = 0; r < m.rows; r++) {
      let s = 0;
      for (let k = 0; k < m.cols; k++) s += (m.data[r * m.cols + k] ?? 0) * (x[k] ?? 0);
      y[r] = s;
    }
    return y;
  }

  private rmsNorm(x: Float64Array, w: Float64Array, offset = 0, size = x.length): void {
    let ss = 0;
    for (let i = 0; i < size; i++) ss += (x[offset + i] ?? 0) ** 2;
    const inv = 1 / Math.sqrt(ss / size + this.c.rmsNormEps);
    for (let i = 0; i < size; i++) x[offset + i] = (x[offset + i] ?? 0) * inv * (w[i] ?? 0);
  }

  /**
   * mx.fast.rope, traditional=false: dimension i rotates with i + D/2, by position / period_i, where
   * period_i = theta^(2i/D); rope_scaling "linear" divides the position by its factor, "llama3"
   * stretches the long periods (transformers' _compute_llama3_parameters, as mlx-lm's Llama3RoPE).
   */
  private period(i: number): number {
    const c = this.c;
    const period = c.ropeTheta ** ((2 * i) / c.headDim);
    const s = c.ropeScaling;
    if (s?.type !== "llama3") return period;
    const factor = s.factor ?? 1;
    const low = s.lowFreqFactor ?? 1;
    const high = s.highFreqFactor ?? 4;
    const original = s.originalMaxPositionEmbeddings ?? 8192;
    const wavelength = 2 * Math.PI * period;
    if (wavelength > original / low) return period * factor;
    if (wavelength < original / high) return period;
    const smooth = (original / wavelength - low) / (high - low);
    return period / ((1 - smooth) / factor + smooth);
  }

  private rope(x: Float64Array, heads: number, position: number): void {
    const D = this.c.headDim;
    const half = D / 2;
    const p = this.c.ropeScaling?.type === "linear" ? position / (this.c.ropeScaling.factor ?? 1) : position;
    for (let h = 0; h < heads; h++)
      for (let i = 0; i < half; i++) {
        const angle = p / this.period(i);
        const a = x[h * D + i] ?? 0;
        const b = x[h * D + i + half] ?? 0;
        x[h * D + i] = a * Math.cos(angle) - b * Math.sin(angle);
        x[h * D + i + half] = a * Math.sin(angle) + b * Math.cos(angle);
      }
  }

  /** The logits of every position ([n][vocab]). */
  logits(tokens: ArrayLike<number>): Float64Array[] {
    const c = this.c;
    const D = c.headDim;
    const H = c.numAttentionHeads;
    const Hkv = c.numKeyValueHeads;
    const n = tokens.length;
    let h = Array.from({ length: n }, (_, t) =>
      this.embed.data.slice((tokens[t] ?? 0) * c.hiddenSize, ((tokens[t] ?? 0) + 1) * c.hiddenSize),
    );
    for (const l of this.layers) {
      const qs: Float64Array[] = [];
      const ks: Float64Array[] = [];
      const vs: Float64Array[] = [];
      for (let t = 0; t < n; t++) {
        const x = Float64Array.from(h[t] ?? []);
        this.rmsNorm(x, l.inNorm);
        const q = Reference.linear(l.q, x);
        const k = Reference.linear(l.k, x);
        if (l.qNorm && l.kNorm) {
          for (let j = 0; j < H; j++) this.rmsNorm(q, l.qNorm, j * D, D);
          for (let j = 0; j < Hkv; j++) this.rmsNorm(k, l.kNorm, j * D, D);
        }
        this.rope(q, H, t);
        this.rope(k, Hkv, t);
        qs.push(q);
        ks.push(k);
        vs.push(Reference.linear(l.v, x));
      }
      h = h.map((ht, t) => {
        const attn = new Float64Array(H * D);
        for (let j = 0; j < H; j++) {
          const kv = Math.floor(j / (H / Hkv));
          const scores = Array.from({ length: t + 1 }, (_, s) => {
            let dot = 0;
            for (let d = 0; d < D; d++) dot += (qs[t]?.[j * D + d] ?? 0) * (ks[s]?.[kv * D + d] ?? 0);
            return dot / Math.sqrt(D);
          });
          const max = Math.max(...scores);
          const e = scores.map((x) => Math.exp(x - max));
          const sum = e.reduce((a, b) => a + b, 0);
          for (let s = 0; s <= t; s++)
            for (let d = 0; d < D; d++)
              attn[j * D + d] = (attn[j * D + d] ?? 0) + ((e[s] ?? 0) / sum) * (vs[s]?.[kv * D + d] ?? 0);
        }
        const r = Float64Array.from(ht);
        const o = Reference.linear(l.o, attn);
        for (let i = 0; i < r.length; i++) r[i] = (r[i] ?? 0) + (o[i] ?? 0);
        const x = Float64Array.from(r);
        this.rmsNorm(x, l.postNorm);
        const g = Reference.linear(l.gate, x);
        const u = Reference.linear(l.up, x);
        for (let i = 0; i < g.length; i++) g[i] = ((g[i] ?? 0) / (1 + Math.exp(-(g[i] ?? 0)))) * (u[i] ?? 0);
        const down = Reference.linear(l.down, g);
        for (let i = 0; i < r.length; i++) r[i] = (r[i] ?? 0) + (down[i] ?? 0);
        return r;
      });
    }
    return h.map((ht) => {
      const x = Float64Array.from(ht);
      this.rmsNorm(x, this.norm);
      return Reference.linear(this.head, x);
    });
  }
}

const argmax = (v: ArrayLike<number>) => {
  let best = 0;
  for (let i = 1; i < v.length; i++) if ((v[i] ?? 0) > (v[best] ?? 0)) best = i;
  return best;
};

// ---------------------------------------------------------------------------------------------------

describe.skipIf(!addonTestable())("the MLX addon on tiny synthesized checkpoints", () => {
  const synthesized = new Map<string, string>();
  async function checkpoint(shape: "tiny" | "tiny-llama", bits: MlxBits): Promise<string> {
    const key = `${shape}-${bits}`;
    let path = synthesized.get(key);
    if (!path) {
      path = join(dir, key);
      await synthesizeMlxCheckpoint({ shape, seed: 1, bits, outDir: path });
      synthesized.set(key, path);
    }
    return path;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "darkbloom-native-mlx-"));
    qwenDir = await checkpoint("tiny", 4);
    model = await MlxModel.load(qwenDir);
  });

  afterAll(async () => {
    await Promise.all(schedulers.map((s) => s.close()));
    await model?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  schedulerContract({
    scheduler,
    prompts: () => PROMPTS.map((_, i) => promptOf(i)),
    longPrompt: () => prompt(99, 150),
    plainToken: () => {
      expect(model.isEog(123)).toBe(false);
      return 123;
    },
    eogBans,
    grammar: "refused",
    codeOf: mlxErrorCode,
  });

  it("reports the model's metadata and refuses what it cannot load", async () => {
    const info = model.info();
    expect(info).toMatchObject({ architecture: "qwen3", nVocab: 512, nCtxTrain: 2048, layers: 2, bits: 4 });
    expect(info.device).toBe("cpu");
    expect(info.dtype).toBe("float32");
    expect(info.sizeBytes).toBeGreaterThan(0);
    expect(info.eosTokenIds.length).toBeGreaterThan(0);
    for (const t of info.eosTokenIds) expect(model.isEog(t)).toBe(true);
    expect(thrownCode(() => model.isEog(512))).toBe("bad_input");
    await expect(MlxModel.load(join(dir, "missing"))).rejects.toMatchObject({ code: "model_load_failed" });
    // A config that does not match the weights: the load fails with the tensor's name, not a crash.
    const broken = join(dir, "broken");
    await synthesizeMlxCheckpoint({ shape: "tiny", seed: 2, bits: 8, outDir: broken });
    const config = JSON.parse(
      await (await import("node:fs/promises")).readFile(join(broken, "config.json"), "utf8"),
    );
    await writeFile(join(broken, "config.json"), JSON.stringify({ ...config, hidden_size: 256 }));
    await expect(MlxModel.load(broken)).rejects.toMatchObject({ code: "model_load_failed" });
  });

  it.each([
    ["tiny", 4],
    ["tiny", 8],
    ["tiny-llama", 4],
    ["tiny-llama", 8],
    [
      "tiny-llama",
      4,
      {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 64,
      },
    ],
    ["tiny-llama", 4, { type: "linear", factor: 4 }],
  ] as const)(
    "computes the logits of %s %i-bit (rope_scaling %o) as a float64 reference forward pass does",
    async (shape, bits, ropeScaling?: object) => {
      let path = await checkpoint(shape, bits);
      if (ropeScaling) {
        // The same weights with RoPE scaling in config.json.
        const scaled = join(dir, `${shape}-${bits}-${Object.values(ropeScaling).join("-")}`);
        await cp(path, scaled, { recursive: true });
        const config = JSON.parse(await readFile(join(scaled, "config.json"), "utf8"));
        await writeFile(
          join(scaled, "config.json"),
          JSON.stringify({ ...config, rope_scaling: ropeScaling }),
        );
        path = scaled;
      }
      const m = shape === "tiny" && bits === 4 ? model : await MlxModel.load(path);
      try {
        const reference = await Reference.load(path);
        const tokens = Int32Array.from([3, 77, 140, 9, 300, 45, 61, 2, 499, 17, 250]);
        const got = await m.logits(tokens);
        const want = reference.logits(tokens);
        const vocab = m.info().nVocab;
        let maxDiff = 0;
        let maxAbs = 0;
        for (let t = 0; t < tokens.length; t++)
          for (let i = 0; i < vocab; i++) {
            maxDiff = Math.max(maxDiff, Math.abs((got[t * vocab + i] ?? 0) - (want[t]?.[i] ?? 0)));
            maxAbs = Math.max(maxAbs, Math.abs(want[t]?.[i] ?? 0));
          }
        expect(maxAbs).toBeGreaterThan(0.1); // not a vacuous comparison
        expect(maxDiff).toBeLessThan(1e-3 * Math.max(1, maxAbs));
      } finally {
        if (m !== model) await m.close();
      }
    },
  );

  it("decodes greedily what the reference's argmax continues with", async () => {
    const reference = await Reference.load(qwenDir);
    const p = promptOf(1);
    const out = await generate(await scheduler({ rows: 1 }), {
      prompt: p,
      maxTokens: 12,
      sampling: { ...GREEDY, logitBias: eogBans() },
    });
    const eos = new Set(model.info().eosTokenIds);
    const tokens = [...p];
    const expected: number[] = [];
    for (let i = 0; i < 12; i++) {
      const last = reference.logits(tokens).at(-1) ?? new Float64Array();
      for (const t of eos) last[t] = Number.NEGATIVE_INFINITY;
      const best = argmax(last);
      const margin = (last[best] ?? 0) - Math.max(...Array.from(last).filter((_, j) => j !== best));
      if (margin < 1e-4) break; // a near tie: float32 may pick either
      expected.push(best);
      tokens.push(best);
    }
    expect(expected.length).toBeGreaterThan(4);
    expect(out.tokens.slice(0, expected.length)).toEqual(expected);
  });

  it("reports the logprobs of the model's raw logits, greedy's sampled token first", async () => {
    const p = promptOf(2);
    const ours = await generateWithLogprobs(await scheduler({ rows: 2 }), {
      prompt: p,
      maxTokens: 8,
      sampling: { ...GREEDY, logprobs: 5 },
    });
    expect(ours.tokens.length).toBeGreaterThan(1);
    for (const [i, token] of ours.tokens.entries()) {
      const lp = ours.logprobs[i] as TokenLogprobs;
      const top = [...lp.topLogprobs];
      expect(lp.topTokens[0]).toBe(token);
      expect(lp.logprob).toBe(top[0]);
      expect(top.every((v, k) => v <= 0 && (k === 0 || v <= (top[k - 1] ?? 0)))).toBe(true);
    }
    // The first token's, against log_softmax (in float64) of the same prompt's last logits from the
    // addon's diagnostic forward pass.
    const vocab = model.info().nVocab;
    const last = Array.from((await model.logits(p)).subarray((p.length - 1) * vocab, p.length * vocab));
    const max = Math.max(...last);
    const logSum = Math.log(last.reduce((sum, l) => sum + Math.exp(l - max), 0));
    const first = ours.logprobs[0] as TokenLogprobs;
    for (const [k, t] of first.topTokens.entries())
      expect(Math.abs((last[t] ?? 0) - max - logSum - (first.topLogprobs[k] ?? 0))).toBeLessThan(1e-3);
  });

  it("rows of very different lengths join and leave a batch and each decodes as alone", async () => {
    // Left padding, a row moved into a freed slot, the cache shifted when a longer row joins and
    // compacted when the longest leaves.
    const requests = [
      { prompt: prompt(7, 3), maxTokens: 40 },
      { prompt: prompt(8, 90), maxTokens: 5 },
      { prompt: prompt(9, 20), maxTokens: 30 },
      { prompt: prompt(10, 60), maxTokens: 12 },
      { prompt: prompt(11, 1), maxTokens: 25 },
      { prompt: prompt(12, 130), maxTokens: 8 },
    ].map((r) => ({ ...r, sampling: { ...GREEDY, logitBias: eogBans() } }));
    const batched = await scheduler({ rows: 3, contextPerRow: 160, prefillChunk: 32 });
    const together = await Promise.all(requests.map((r) => generate(batched, r)));
    const single = await scheduler({ rows: 1, contextPerRow: 160, prefillChunk: 32 });
    const alone: Outcome[] = [];
    for (const r of requests) alone.push(await generate(single, r));
    expect(together).toEqual(alone);
    expect(batched.stats()).toMatchObject({ busyRows: 0, kvCellsUsed: 0 });
  });

  it("applies min-p and the penalties, the same in a batch as alone", async () => {
    const sampling: NativeSamplingOptions = {
      temperature: 0.8,
      minP: 0.05,
      seed: 5,
      repeatPenalty: 1.3,
      presencePenalty: 0.5,
      frequencyPenalty: 0.5,
      penaltyLastN: 32,
    };
    const s = await scheduler({ rows: 2 });
    const alone = await generate(s, { prompt: promptOf(3), maxTokens: 24, sampling });
    const [amid] = await Promise.all([
      generate(s, { prompt: promptOf(3), maxTokens: 24, sampling }),
      generate(s, { prompt: promptOf(2), maxTokens: 24, sampling: GREEDY }),
    ]);
    expect(amid).toEqual(alone);
    // A strong repetition penalty on greedy decoding: no generated token repeats within the window.
    const penalized = await generate(s, {
      prompt: promptOf(0),
      maxTokens: 20,
      sampling: { temperature: 0, repeatPenalty: 1000, penaltyLastN: 64, logitBias: eogBans() },
    });
    expect(new Set(penalized.tokens).size).toBe(penalized.tokens.length);
  });

  it("refuses prompt + maxTokens beyond the context per row, and bad input, before anything runs", async () => {
    const s = await scheduler({ rows: 2, contextPerRow: 64 });
    const p = prompt(3, 60);
    expect(thrownCode(() => s.submit({ id: "x", prompt: p, maxTokens: 5 }, () => {}))).toBe(
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
    await expect(model.createScheduler({ kvBits: 5 as 4 })).rejects.toMatchObject({ code: "bad_input" });
    // Exactly at the limit is fine.
    const fits = await generate(s, {
      prompt: p,
      maxTokens: 4,
      sampling: { ...GREEDY, logitBias: eogBans() },
    });
    expect(fits).toMatchObject({ error: undefined, reason: "length", generatedTokens: 4 });
  });

  it.each([8, 4] as const)("with a %i-bit KV cache generates the same at batch 4 and 1", async (kvBits) => {
    const four = await scheduler({ rows: 4, kvBits, prefillChunk: 8 });
    const one = await scheduler({ rows: 1, kvBits, prefillChunk: 8 });
    const requests = PROMPTS.map((_, i) => ({ prompt: promptOf(i), maxTokens: 24, sampling: GREEDY }));
    const together = await Promise.all(requests.map((r) => generate(four, r)));
    const alone: Outcome[] = [];
    for (const r of requests) alone.push(await generate(one, r));
    expect(together).toEqual(alone);
    expect(together[0]?.tokens.length).toBeGreaterThan(0);
    expect(four.stats().kvBytes).toBeGreaterThan(0);
    expect(four.stats().kvBytes).toBeLessThan((await scheduler({ rows: 4 })).stats().kvBytes);
  });

  it.each([
    // process.exit from the first step's events: the engine thread is mid-generation at teardown.
    ["exits mid-generation (process.exit tears the engine down)", "() => process.exit(7)", 7],
    ["exits by itself when its requests are done, with its scheduler and model left open", "() => {}", 0],
  ])("a process that %s", async (_, onStep, status) => {
    const addon = fileURLToPath(new URL("../mlx/build/Release/darkbloom_mlx.node", import.meta.url));
    const script = `
      const binding = require(${JSON.stringify(addon)});
      (async () => {
        const model = await binding.loadModel(JSON.parse(process.argv[1]));
        const s = await model.createScheduler({ rows: 2, contextPerRow: 256 }, ${onStep});
        const sampling = { temperature: 0, logitBias: [${eogBans().map(([t]) => `[${t}, -Infinity]`)}] };
        s.submit("a", new Int32Array([1, 2, 3]), 200, sampling);
        s.submit("b", new Int32Array([4, 5]), 100, sampling);
      })();`;
    const config = await readMlxCheckpoint(qwenDir);
    // A crash at exit is a race: the mid-generation case runs a few times.
    for (let i = 0; i < (status === 0 ? 1 : 6); i++) {
      const r = spawnSync(process.execPath, ["-e", script, JSON.stringify(config)], { timeout: 60_000 });
      expect({ status: r.status, signal: r.signal, stderr: String(r.stderr) }).toEqual({
        status,
        signal: null,
        stderr: "",
      });
    }
  });
});
