import { createRequire } from "node:module";
import { errorCodes } from "./coded-error.js";

/**
 * The llama addon (addon/llama, built by `npm run build:native` from llama.cpp's source that
 * node-llama-cpp ships): a continuous-batching inference core. One engine thread per scheduler owns a
 * llama_context and runs every decode on it; tokens stream back to JS once per step. Greedy output is
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

export interface SchedulerOptions {
  /** The most sequences decoding at once (1 to 256). Default 1. */
  rows?: number;
  /** KV cells per row: prompt + maxTokens of a request must fit. Default: the model's training context. */
  contextPerRow?: number;
  /** CPU threads for llama.cpp. Default min(4, cores). On small models one is often fastest. */
  threads?: number;
  /** The KV cache's type; quantized caches turn flash attention on (llama.cpp requires it). Default f16. */
  kvType?: KvType;
  /** Prompt tokens per prefill chunk (one llama_decode each). Default 512. */
  prefillChunk?: number;
  /** Submissions that may wait for a row; one more throws `busy`. Default 64. */
  queueDepth?: number;
}

/** Every field optional; each filter's default is "off", temperature's is 1. */
export interface NativeSamplingOptions {
  /** 0 = greedy. */
  temperature?: number;
  /** 0 = off. */
  topK?: number;
  /** 1 = off. */
  topP?: number;
  /** 0 = off. */
  minP?: number;
  /** 0 to 2^32-2; absent: a random seed. Each row has its own RNG. */
  seed?: number;
  /** 1 = off. Penalties look back over the generated tokens only (the last penaltyLastN of them). */
  repeatPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** Default 64. */
  penaltyLastN?: number;
  /** [token, bias] pairs, added to the logits; -Infinity bans a token. */
  logitBias?: ReadonlyArray<readonly [number, number]>;
}

export interface GenerateRequest {
  /** Unique among this scheduler's queued and running requests. */
  id: string;
  prompt: Int32Array;
  maxTokens: number;
  sampling?: NativeSamplingOptions;
}

export type FinishReason = "stop" | "length" | "cancelled";

export type SchedulerEvent =
  | { kind: "tokens"; tokens: Int32Array }
  | { kind: "done"; reason: FinishReason; promptTokens: number; generatedTokens: number }
  | { kind: "error"; code: LlamaErrorCode; message: string };

export interface SchedulerStats {
  busyRows: number;
  queued: number;
  rows: number;
  kvCellsUsed: number;
  kvCells: number;
  promptTokensProcessed: number;
  prefillSeconds: number;
  decodeSeconds: number;
  decodeSteps: number;
  tokensGenerated: number;
}

/** The addon's objects, as addon/llama defines them. */
type RawEvent = { id: string } & SchedulerEvent;

interface RawScheduler {
  submit(
    id: string,
    prompt: Int32Array,
    maxTokens: number,
    sampling: NativeSamplingOptions | undefined,
  ): void;
  cancel(id: string): "queued" | "running" | "unknown";
  stats(): SchedulerStats;
  close(): Promise<void>;
}

interface RawModel {
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  piece(token: number): Uint8Array;
  isEog(token: number): boolean;
  info(): LlamaModelInfo;
  createScheduler(options: SchedulerOptions, onStep: (events: RawEvent[]) => void): Promise<RawScheduler>;
  close(): void;
}

export interface LlamaBinding {
  loadModel(path: string, options: { gpuLayers?: number }): Promise<RawModel>;
  systemInfo(): string;
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

export class NativeLlamaModel {
  private readonly schedulers = new Set<NativeLlamaScheduler>();
  private closing: Promise<void> | undefined;

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

  /** The token's bytes (special tokens rendered); a piece may be part of a UTF-8 character. */
  piece(token: number): Uint8Array {
    return this.raw.piece(token);
  }

  isEog(token: number): boolean {
    return this.raw.isEog(token);
  }

  info(): LlamaModelInfo {
    return this.raw.info();
  }

  /** A scheduler over a new context of this model (its KV cache is allocated off the JS thread). */
  async createScheduler(options: SchedulerOptions = {}): Promise<NativeLlamaScheduler> {
    if (this.closing) throw coded("closed", "the model is closed");
    const scheduler = new NativeLlamaScheduler(() => this.schedulers.delete(scheduler));
    scheduler.attach(await this.raw.createScheduler(options, (events) => scheduler.dispatch(events)));
    this.schedulers.add(scheduler);
    return scheduler;
  }

  /** Closes this model's schedulers (their requests end "cancelled"), then frees the model. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.all([...this.schedulers].map((s) => s.close()));
      this.raw.close();
    })();
    return this.closing;
  }
}

export class NativeLlamaScheduler {
  private raw: RawScheduler | undefined;
  private readonly listeners = new Map<
    string,
    { onEvent: (event: SchedulerEvent) => void; promptTokens: number }
  >();
  private closing: Promise<void> | undefined;

  /** @internal made by NativeLlamaModel.createScheduler */
  constructor(private readonly onClosed: () => void) {}

  /** @internal */
  attach(raw: RawScheduler): void {
    this.raw = raw;
  }

  /**
   * Queues a request; `onEvent` gets its tokens as they are sampled, then exactly one "done" or
   * "error". Throws (synchronously) bad_input, context_length_exceeded, busy or closed.
   */
  submit(request: GenerateRequest, onEvent: (event: SchedulerEvent) => void): void {
    if (this.listeners.has(request.id))
      throw coded("bad_input", `a request with id ${request.id} is already submitted`);
    this.scheduler().submit(request.id, request.prompt, request.maxTokens, request.sampling);
    this.listeners.set(request.id, { onEvent, promptTokens: request.prompt.length });
  }

  /**
   * Cancels a request: a queued one completes "cancelled" at once, a running one at the next step
   * boundary (its row is freed then). Unknown or finished ids are ignored.
   */
  cancel(id: string): void {
    const listener = this.listeners.get(id);
    if (!listener) return;
    if (this.scheduler().cancel(id) === "queued") {
      this.listeners.delete(id);
      this.emit(listener.onEvent, {
        kind: "done",
        reason: "cancelled",
        promptTokens: listener.promptTokens,
        generatedTokens: 0,
      });
    }
  }

  stats(): SchedulerStats {
    return this.scheduler().stats();
  }

  /** Cancels everything (each request ends "cancelled"), stops the engine thread, frees the context. */
  close(): Promise<void> {
    this.closing ??= this.scheduler()
      .close()
      .finally(() => this.onClosed());
    return this.closing;
  }

  /** @internal one engine step's events, in order */
  dispatch(events: readonly RawEvent[]): void {
    for (const { id, ...event } of events) {
      const listener = this.listeners.get(id);
      if (!listener) continue;
      if (event.kind !== "tokens") this.listeners.delete(id);
      this.emit(listener.onEvent, event as SchedulerEvent);
    }
  }

  private emit(listener: (event: SchedulerEvent) => void, event: SchedulerEvent): void {
    try {
      listener(event);
    } catch (err) {
      // A listener's bug must not stop the other rows' events: surface it as an uncaught exception.
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  private scheduler(): RawScheduler {
    if (!this.raw) throw coded("closed", "the scheduler is not ready");
    return this.raw;
  }
}
