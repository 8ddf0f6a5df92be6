import { createRequire } from "node:module";
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

export type {
  FinishReason,
  GenerateRequest,
  NativeSamplingOptions,
  SchedulerStats,
  TokenLogprobs,
} from "./batch-scheduler.js";

/**
 * The llama addon (addon/llama, built by `npm run build:native` from llama.cpp's source that
 * node-llama-cpp ships): a continuous-batching inference core. One engine thread per scheduler owns a
 * llama_context and runs every decode on it; tokens stream back to JS after each step, or a few steps
 * together when steps are faster than the delivery interval (deliveryIntervalUs). Greedy output is
 * batch-invariant (the same tokens at batch 1 and batch N) and a seed reproduces its tokens in any
 * batch (addon/llama/engine.cc says why). Errors carry a stable `code`: read it with llamaErrorCode.
 */

export type LlamaErrorCode =
  /** The addon is not built on this machine (npm run build:native). */
  | "llama_not_built"
  | "model_load_failed"
  /** Malformed arguments: tokens outside the vocabulary, options out of range, a duplicate id. */
  | "bad_input"
  /** prompt + maxTokens exceeds the scheduler's contextPerRow. */
  | "context_length_exceeded"
  /** The scheduler's queue is full (queueDepth waiting submissions). */
  | "busy"
  | "closed"
  /** llama.cpp failed during a decode (the request fails; the scheduler may keep running). */
  | "engine_failed";

const CODES = errorCodes<LlamaErrorCode>([
  "llama_not_built",
  "model_load_failed",
  "bad_input",
  "context_length_exceeded",
  "busy",
  "closed",
  "engine_failed",
]);
const coded = CODES.coded;

/** The llama error code of any thrown value (an addon Error with `code`), else undefined. */
export const llamaErrorCode: (error: unknown) => LlamaErrorCode | undefined = CODES.codeOf;

export interface LlamaModelInfo {
  nCtxTrain: number;
  nVocab: number;
  bos: number | null;
  eos: number | null;
  architecture: string | null;
  /** The GGUF's tokenizer.chat_template, or null. */
  chatTemplate: string | null;
  /** Bytes of the model's tensors. */
  sizeBytes: number;
}

export type KvType = "f16" | "q8_0" | "q4_0";

export interface SchedulerOptions extends BatchSchedulerOptions {
  /** CPU threads for llama.cpp. Default min(4, cores). On small models one is often fastest. */
  threads?: number;
  /** The KV cache's type; quantized caches turn flash attention on (llama.cpp requires it). Default f16. */
  kvType?: KvType;
}

export type SchedulerEvent = BatchSchedulerEvent<LlamaErrorCode>;

/** The addon's objects, as addon/llama defines them. */
type RawEvent = RawSchedulerEvent<LlamaErrorCode>;

interface RawModel {
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  piece(token: number, special?: boolean): Uint8Array;
  isEog(token: number): boolean;
  info(): LlamaModelInfo;
  createScheduler(options: SchedulerOptions, onStep: (events: RawEvent[]) => void): Promise<RawScheduler>;
  close(): void;
}

/** A device ggml found, as its backend describes it. */
export interface LlamaDevice {
  /** The backend's name for it ("CUDA0", "CPU"). */
  name: string;
  /** The hardware ("NVIDIA H100 80GB HBM3", the CPU's model name). */
  description: string;
  /** The backend that found it ("CUDA", "CPU"). */
  backend: string;
  /** ggml's device type; "meta" stands for any type this build does not name. */
  type: "cpu" | "gpu" | "igpu" | "accel" | "meta";
  memoryFree: number;
  memoryTotal: number;
}

/** What the addon can compute on here: the backends compiled in, and the devices they found. */
export interface LlamaHardware {
  /** ggml's backend names, e.g. ["CUDA", "CPU"] for a CUDA build (even where no GPU is found). */
  backends: string[];
  devices: LlamaDevice[];
}

export interface LlamaBinding {
  loadModel(path: string, options: { gpuLayers?: number }): Promise<RawModel>;
  systemInfo(): string;
  hardware(): LlamaHardware;
}

let cached: LlamaBinding | null | undefined;

/** The built addon, or undefined when it was not built here. */
export function loadLlamaBinding(): LlamaBinding | undefined {
  if (cached === undefined) {
    try {
      // From src/ (tests) and dist/ alike: native/llama/build is where build-llama.mjs puts it.
      cached = createRequire(import.meta.url)("../llama/build/Release/darkbloom_llama.node") as LlamaBinding;
    } catch {
      cached = null;
    }
  }
  return cached ?? undefined;
}

/** Whether the llama addon loads on this machine. */
export function nativeLlamaAvailable(): boolean {
  return loadLlamaBinding() !== undefined;
}

/** The addon's backends and devices (the GPUs first, as ggml lists them), or undefined when not built. */
export function llamaHardware(): LlamaHardware | undefined {
  return loadLlamaBinding()?.hardware();
}

/** The devices a model's layers can be offloaded to: GPUs, integrated or discrete. */
export function llamaGpus(hardware: LlamaHardware): LlamaDevice[] {
  return hardware.devices.filter((d) => d.type === "gpu" || d.type === "igpu");
}

export class NativeLlamaModel {
  private readonly schedulers = new ModelSchedulers<LlamaErrorCode, SchedulerStats>(CODES);

  private constructor(private readonly raw: RawModel) {}

  /** Loads a GGUF off the JS thread; rejects with model_load_failed (or llama_not_built). */
  static async load(path: string, options: { gpuLayers?: number } = {}): Promise<NativeLlamaModel> {
    const binding = loadLlamaBinding();
    if (!binding) throw coded("llama_not_built", "the llama addon is not built (npm run build:native)");
    return new NativeLlamaModel(await binding.loadModel(path, options));
  }

  tokenize(text: string, options: { addSpecial?: boolean; parseSpecial?: boolean } = {}): Int32Array {
    return this.raw.tokenize(text, options.addSpecial ?? true, options.parseSpecial ?? false);
  }

  /**
   * The token's bytes; a piece may be part of a UTF-8 character. `special` false renders control
   * tokens (end of turn, BOS, ...) as nothing, as text detokenized without special tokens has them
   * (node-llama-cpp's detokenize(tokens, false)); true (the default) renders their markup.
   */
  piece(token: number, special = true): Uint8Array {
    return this.raw.piece(token, special);
  }

  isEog(token: number): boolean {
    return this.raw.isEog(token);
  }

  info(): LlamaModelInfo {
    return this.raw.info();
  }

  /** A scheduler over a new context of this model (its KV cache is allocated off the JS thread). */
  createScheduler(options: SchedulerOptions = {}): Promise<NativeLlamaScheduler> {
    return this.schedulers.create(
      (onClosed) => new NativeLlamaScheduler(CODES, onClosed),
      (onStep) => this.raw.createScheduler(options, onStep),
    );
  }

  /** Closes this model's schedulers (their requests end "cancelled"), then frees the model. */
  close(): Promise<void> {
    return this.schedulers.close(() => this.raw.close());
  }
}

/** A scheduler over one llama context: the shared NativeScheduler with the llama error codes. */
export class NativeLlamaScheduler extends NativeScheduler<LlamaErrorCode> {}
