/**
 * The options the engines over ModelHostEngine take, with the same meanings everywhere, and how they
 * are checked (in a fixed order, so that a bad option is reported the same on every engine).
 */
import type { CpuTopology } from "../machine/topology.js";
import type { ModelVetter } from "./formats.js";
import { sharedModelValidator } from "./llama/model-validator.js";
import { ThreadSetting } from "./threads.js";

export type { ModelVetter };

/** The options every engine over ModelHostEngine takes, with the same meanings. */
export interface ModelHostOptions {
  /** Batch rows per model (LlamaContext sequences). */
  maxBatch: number;
  /** Tokens per row: prompt + max_tokens above this is refused with "context_length_exceeded". */
  maxContext: number;
  /** KV-cache quantization: 8 → q8_0, 4 → q4_0 (both K and V; turns on flash attention). */
  kvBits?: 4 | 8 | undefined;
  /**
   * CPU threads for evaluation: a number, or "auto" to choose per model when it loads from its size
   * and the machine's physical cores (engine/threads.ts). Never llama.cpp's own default, which
   * oversubscribes small machines.
   */
  threads: number | "auto";
  /** The machine's CPU topology for "auto" (default: detected at the first load). */
  topology?: CpuTopology | undefined;
  /** Cores granted to this engine for "auto" (its share of a machine shared with others; default all). */
  coreShare?: number | undefined;
  /**
   * Bytes a loaded model may take with its context (weights, KV cache of every row, compute
   * buffers). When `maxBatch` rows of `maxContext` tokens would take more, each row's context is
   * lowered to what fits (and logged); without it the context is allocated as asked.
   */
  memoryBudgetBytes?: number | undefined;
  /** Unload a model idle this long; 0 disables. The next request reloads it. */
  idleTimeoutMinutes: number;
  /** Generations allowed to wait for a row (per model) before "engine_busy" (default 256). */
  queueDepth?: number | undefined;
  /** Prompt tokens evaluated per prefill step (default 256); also the context's llama_decode batch size. */
  prefillChunk?: number | undefined;
  /** Vets model files before loading; `false` trusts every file (tests, pre-vetted files). Default: a process-wide validator. */
  validator?: ModelVetter | false | undefined;
  /** llama.cpp and engine log lines (default: errors to stderr). */
  onLog?: ((level: "debug" | "info" | "warn" | "error", message: string) => void) | undefined;
}

/** The options as checked, minus threads (chosen per model when it loads). */
export interface HostSettings {
  maxBatch: number;
  maxContext: number;
  kvBits: 4 | 8 | undefined;
  memoryBudgetBytes: number | undefined;
  idleTimeoutMinutes: number;
  queueDepth: number;
  prefillChunk: number;
}

/** What an engine-specific check of its options may add to the common ones, and where. */
export interface OptionChecks {
  /** The most rows a model may have (checked right after maxBatch). */
  maxBatchLimit?: { rows: number; message: string } | undefined;
  /** Checks of the engine's own options, after the common ones and before the defaults are applied. */
  more?: (() => void) | undefined;
  /** The validator used when the options name none (default: the GGUF one, sharedModelValidator). */
  defaultValidator?: ModelVetter | undefined;
}

const DEFAULT_QUEUE_DEPTH = 256;
const DEFAULT_PREFILL_CHUNK = 256;

const positiveInt = (name: string, v: unknown): number => {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1)
    throw new Error(`${name} must be a positive integer`);
  return v;
};

/** Checks the common options and the engine's own, and applies the defaults. */
export function checkHostOptions(
  options: ModelHostOptions,
  checks: OptionChecks,
): { settings: HostSettings; threads: ThreadSetting; validator: ModelVetter | undefined } {
  const maxBatch = positiveInt("maxBatch", options.maxBatch);
  if (checks.maxBatchLimit && maxBatch > checks.maxBatchLimit.rows)
    throw new Error(checks.maxBatchLimit.message);
  const maxContext = positiveInt("maxContext", options.maxContext);
  const threads = new ThreadSetting(
    options.threads === "auto" ? "auto" : positiveInt("threads", options.threads),
    options.coreShare === undefined ? undefined : positiveInt("coreShare", options.coreShare),
    options.topology,
  );
  if (options.kvBits !== undefined && options.kvBits !== 4 && options.kvBits !== 8)
    throw new Error("kvBits must be 4 or 8");
  if (!Number.isFinite(options.idleTimeoutMinutes) || options.idleTimeoutMinutes < 0) {
    throw new Error("idleTimeoutMinutes must be >= 0");
  }
  checks.more?.();
  const settings: HostSettings = {
    maxBatch,
    maxContext,
    kvBits: options.kvBits,
    memoryBudgetBytes: options.memoryBudgetBytes,
    idleTimeoutMinutes: options.idleTimeoutMinutes,
    queueDepth:
      options.queueDepth === undefined ? DEFAULT_QUEUE_DEPTH : Math.max(0, Math.floor(options.queueDepth)),
    prefillChunk:
      options.prefillChunk === undefined
        ? DEFAULT_PREFILL_CHUNK
        : positiveInt("prefillChunk", options.prefillChunk),
  };
  const validator =
    options.validator === false
      ? undefined
      : (options.validator ?? checks.defaultValidator ?? sharedModelValidator);
  return { settings, threads, validator };
}
