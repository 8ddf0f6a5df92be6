import { readdir, readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import {
  type BatchSchedulerEvent,
  type BatchSchedulerOptions,
  ModelSchedulers,
  NativeScheduler,
  type RawScheduler,
  type RawSchedulerEvent,
  type SchedulerStats,
} from "./batch-scheduler.js";
import { errorCodes } from "./coded-error.js";

/**
 * The MLX addon (addon/mlx, built by `npm run build:native` where an MLX installation is found:
 * DARKBLOOM_MLX_DIR, Homebrew's, or the Python wheel's): the llama addon's continuous-batching
 * scheduler contract over mlx-community checkpoints (config.json plus 4-/8-bit or float safetensors)
 * of the Qwen3 and Llama families. One engine thread per loaded model runs all of its MLX work (MLX
 * evaluates on the thread that owns its stream); each scheduler preallocates a batched KV cache of
 * `rows` × `contextPerRow` positions (left-padded, per-row offsets), optionally quantized to 4 or 8
 * bits. Tokenizing and chat templates stay with the caller (tokenizer.json is not read here). Errors
 * carry a stable `code`: read it with mlxErrorCode.
 */

export type {
  FinishReason,
  GenerateRequest,
  NativeSamplingOptions,
  SchedulerStats,
  TokenLogprobs,
} from "./batch-scheduler.js";

export type MlxErrorCode =
  /** The addon is not built on this machine (no MLX installation was found at build time). */
  | "mlx_not_built"
  /** config.json or a safetensors file is missing, unsupported or inconsistent. */
  | "model_load_failed"
  | "bad_input"
  | "context_length_exceeded"
  | "busy"
  | "closed"
  | "engine_failed";

const CODES = errorCodes<MlxErrorCode>([
  "mlx_not_built",
  "model_load_failed",
  "bad_input",
  "context_length_exceeded",
  "busy",
  "closed",
  "engine_failed",
]);
const coded = CODES.coded;

/** The MLX error code of any thrown value (an addon Error with `code`), else undefined. */
export const mlxErrorCode: (error: unknown) => MlxErrorCode | undefined = CODES.codeOf;

export type MlxSchedulerEvent = BatchSchedulerEvent<MlxErrorCode>;

export interface MlxSchedulerOptions extends BatchSchedulerOptions {
  /** Quantize the KV cache (mlx-lm's QuantizedKVCache, groups of 64 or 32 along the head). Default: off. */
  kvBits?: 4 | 8;
}

export interface MlxSchedulerStats extends SchedulerStats {
  /** Bytes of the preallocated KV caches (the batched one and the prefill staging one). */
  kvBytes: number;
}

/** What the addon needs of config.json (mlx-lm's ModelArgs for qwen3 and llama). */
export interface MlxModelConfig {
  architecture: "qwen3" | "llama";
  hiddenSize: number;
  numHiddenLayers: number;
  intermediateSize: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeTraditional: boolean;
  ropeScaling: {
    type: "default" | "linear" | "llama3";
    factor?: number;
    lowFreqFactor?: number;
    highFreqFactor?: number;
    originalMaxPositionEmbeddings?: number;
  } | null;
  tieWordEmbeddings: boolean;
  maxPositionEmbeddings: number;
  /** config.json's and generation_config.json's eos_token_id together. */
  eosTokenIds: number[];
  /** The checkpoint's .safetensors files (absolute paths). */
  files: string[];
}

export interface MlxModelInfo {
  architecture: "qwen3" | "llama";
  nVocab: number;
  nCtxTrain: number;
  layers: number;
  /** Bytes of the loaded weights. */
  sizeBytes: number;
  /** What the forward pass computes in: float32 on the CPU, the checkpoint's own type on a GPU. */
  dtype: "float32" | "float16" | "bfloat16";
  /** Where MLX runs: metal (Apple silicon), cuda, or cpu. */
  device: "metal" | "cuda" | "cpu";
  /** The projections' quantization bits, or null for a float checkpoint. */
  bits: number | null;
  eosTokenIds: number[];
}

type RawEvent = RawSchedulerEvent<MlxErrorCode>;

interface RawModel {
  info(): Omit<MlxModelInfo, "eosTokenIds">;
  isEog(token: number): boolean;
  logits(tokens: Int32Array): Promise<Float32Array>;
  createScheduler(
    options: MlxSchedulerOptions,
    onStep: (events: RawEvent[]) => void,
  ): Promise<RawScheduler<MlxSchedulerStats>>;
  close(): void;
}

export interface MlxBinding {
  loadModel(config: MlxModelConfig): Promise<RawModel>;
  device(): string;
}

let cached: MlxBinding | null | undefined;
let loadError: string | undefined;
// From src/ (tests) and dist/ alike: native/mlx/build is where build-mlx.mjs puts it.
const ADDON = "../mlx/build/Release/darkbloom_mlx.node";

/** The built addon, or undefined when it was not built here (or does not load: mlxUnavailableReason). */
export function loadMlxBinding(): MlxBinding | undefined {
  if (cached === undefined) {
    try {
      cached = createRequire(import.meta.url)(ADDON) as MlxBinding;
    } catch (err) {
      cached = null;
      const e = err as NodeJS.ErrnoException;
      // Not built is the usual case; a built addon that does not load (MLX's library moved, a
      // different Node ABI) is worth its own words.
      loadError =
        e.code === "MODULE_NOT_FOUND"
          ? "npm run build:native with an MLX installation: DARKBLOOM_MLX_DIR, Homebrew's or the Python wheel's"
          : `its addon does not load: ${(e.message ?? String(err)).split("\n")[0]}`;
    }
  }
  return cached ?? undefined;
}

/** Whether the MLX addon loads on this machine. */
export function mlxAvailable(): boolean {
  return loadMlxBinding() !== undefined;
}

/** Why the MLX addon is not available (what to do about it), or undefined when it loads. */
export function mlxUnavailableReason(): string | undefined {
  return loadMlxBinding() === undefined ? loadError : undefined;
}

/** Where the addon's binary is (for a child process that loads a checkpoint on its own). */
export function mlxAddonPath(): string {
  return createRequire(import.meta.url).resolve(ADDON);
}

type Json = Record<string, unknown>;

async function readJson(path: string): Promise<Json | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const value: unknown = JSON.parse(text);
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new Error(`${path} is not an object`);
  return value as Json;
}

function tokenIds(value: unknown): number[] {
  if (typeof value === "number") return [value];
  return Array.isArray(value) ? value.filter((v): v is number => typeof v === "number") : [];
}

/**
 * Reads an mlx-community checkpoint directory: config.json (model_type qwen3 or llama), the eos
 * tokens of generation_config.json, and its .safetensors files (model.safetensors.index.json's, else
 * every *.safetensors). Throws model_load_failed.
 */
export async function readMlxCheckpoint(dir: string): Promise<MlxModelConfig> {
  const fail = (why: string) => coded("model_load_failed", `${dir}: ${why}`);
  let config: Json | undefined;
  let generation: Json | undefined;
  let index: Json | undefined;
  let names: string[];
  try {
    config = await readJson(join(dir, "config.json"));
    generation = await readJson(join(dir, "generation_config.json"));
    index = await readJson(join(dir, "model.safetensors.index.json"));
    names = (await readdir(dir)).filter((f) => f.endsWith(".safetensors")).sort();
  } catch (err) {
    throw fail(err instanceof Error ? err.message : String(err));
  }
  if (!config) throw fail("no config.json");
  const int = (key: string, fallback?: number): number => {
    const v = config[key] ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0)
      throw fail(`config.json's ${key} is not a positive integer`);
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = config[key] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v)) throw fail(`config.json's ${key} is not a number`);
    return v;
  };
  const architecture = config.model_type;
  if (architecture !== "qwen3" && architecture !== "llama")
    throw fail(`model_type ${String(architecture)} is not supported (qwen3 and llama are)`);
  const heads = int("num_attention_heads");
  const hidden = int("hidden_size");
  let ropeScaling: MlxModelConfig["ropeScaling"] = null;
  const scaling = config.rope_scaling as Json | null | undefined;
  if (scaling && typeof scaling === "object") {
    const type = scaling.rope_type ?? scaling.type ?? "default";
    if (type !== "default" && type !== "linear" && type !== "llama3")
      throw fail(`rope_scaling type ${String(type)} is not supported`);
    const opt = (key: string) => (typeof scaling[key] === "number" ? (scaling[key] as number) : undefined);
    ropeScaling = {
      type,
      factor: opt("factor"),
      lowFreqFactor: opt("low_freq_factor"),
      highFreqFactor: opt("high_freq_factor"),
      originalMaxPositionEmbeddings: opt("original_max_position_embeddings"),
    };
  }
  const weightMap = index?.weight_map as Record<string, string> | undefined;
  const files = weightMap ? [...new Set(Object.values(weightMap))].sort() : names;
  if (files.length === 0) throw fail("no .safetensors files");
  const vocabSize = int("vocab_size");
  const eos = [...new Set([...tokenIds(config.eos_token_id), ...tokenIds(generation?.eos_token_id)])].filter(
    (t) => Number.isInteger(t) && t >= 0 && t < vocabSize,
  );
  return {
    architecture,
    hiddenSize: hidden,
    numHiddenLayers: int("num_hidden_layers"),
    intermediateSize: int("intermediate_size"),
    numAttentionHeads: heads,
    numKeyValueHeads: int("num_key_value_heads", heads),
    headDim: int("head_dim", Math.floor(hidden / heads)),
    vocabSize,
    rmsNormEps: num("rms_norm_eps", 1e-6),
    ropeTheta: num("rope_theta", 10000),
    ropeTraditional: config.rope_traditional === true,
    ropeScaling,
    // mlx-lm's defaults: llama ties unless told otherwise; qwen3 always says.
    tieWordEmbeddings:
      typeof config.tie_word_embeddings === "boolean" ? config.tie_word_embeddings : architecture === "llama",
    maxPositionEmbeddings: int("max_position_embeddings", 4096),
    eosTokenIds: eos,
    files: files.map((f) => join(dir, f)),
  };
}

export class MlxModel {
  private readonly schedulers = new ModelSchedulers<MlxErrorCode, MlxSchedulerStats>(CODES);

  private constructor(
    private readonly raw: RawModel,
    readonly config: MlxModelConfig,
  ) {}

  /**
   * Loads a checkpoint directory on a new engine thread (off the JS thread); rejects with
   * model_load_failed (or mlx_not_built).
   */
  static async load(dir: string): Promise<MlxModel> {
    const binding = loadMlxBinding();
    if (!binding)
      throw coded("mlx_not_built", "the MLX addon is not built (npm run build:native with MLX installed)");
    const config = await readMlxCheckpoint(dir);
    return new MlxModel(await binding.loadModel(config), config);
  }

  info(): MlxModelInfo {
    return { ...this.raw.info(), eosTokenIds: [...this.config.eosTokenIds] };
  }

  isEog(token: number): boolean {
    return this.raw.isEog(token);
  }

  /**
   * Diagnostic: the logits of every position of `tokens` ([n × nVocab], row-major), from one forward
   * pass on the engine thread without a scheduler.
   */
  logits(tokens: Int32Array): Promise<Float32Array> {
    return this.raw.logits(tokens);
  }

  /** A scheduler over this model (its KV cache is preallocated on the engine thread). */
  createScheduler(options: MlxSchedulerOptions = {}): Promise<MlxScheduler> {
    return this.schedulers.create(
      (onClosed) => new MlxScheduler(CODES, onClosed),
      (onStep) => this.raw.createScheduler(options, onStep),
    );
  }

  /** Closes this model's schedulers (their requests end "cancelled"), then frees the model. */
  close(): Promise<void> {
    return this.schedulers.close(() => this.raw.close());
  }
}

/** A scheduler of an MLX model: the shared NativeScheduler with the MLX error codes. */
export class MlxScheduler extends NativeScheduler<MlxErrorCode, MlxSchedulerStats> {}
