/**
 * The `llama` engine: llama.cpp through node-llama-cpp, with continuous batching.
 *
 * Rows. Each loaded model has one LlamaContext with `sequences = maxBatch`; every sequence is a batch
 * row with its own KV stream (node-llama-cpp 3.22 creates contexts with a non-unified KV cache, so a
 * row owns `maxContext` cells). A generation takes a free row or waits in the model's FIFO queue (at
 * most `queueDepth` waiting, then "engine_busy"). A finished or cancelled row is retired at the next
 * step boundary: its generator is closed and its KV cells are cleared, and the next queued request
 * takes it.
 *
 * Steps. A per-model loop runs while any row has work. Each round it retires finished rows, admits
 * queued requests into free rows, runs one decode step, then one prefill step:
 * - Decode step: `next()` is called on the token generator of every decoding row in the same tick
 *   and the loop awaits them together. node-llama-cpp queues each sequence's pending token on the
 *   context and dispatches everything queued in one event-loop turn (`setImmediate`, or at once when
 *   every sequence has queued) as one `llama_decode`, so a step is one batched decode of all rows
 *   (measured: 100 steps of 4 rows → 100 decode calls; rows that each loop on their own drift into
 *   ~7% extra, partial decodes).
 * - Prefill step: the next `prefillChunk` tokens of the oldest row still reading its prompt,
 *   evaluated alone; the last chunk starts the row's generator, which samples its first token, and
 *   the row joins the decode steps. Long prompts are thus interleaved with the running rows instead
 *   of stalling them, and rows join and leave between steps while the others keep decoding.
 *
 * Determinism. Output must not depend on what else is running: same request + seed → same text at
 * batch 1 and batch N. Three llama.cpp facts matter (found by bit-comparing token probabilities):
 * (1) ggml's CPU matmuls are row-independent, so decode steps are batch-invariant; (2) how a prompt is
 * split into ubatches changes the numerics (and with a non-unified KV cache llama.cpp re-splits a
 * mixed batch per sequence), hence prompt chunks are fixed-size, aligned to the prompt start and never
 * shared with other rows; (3) CPU flash attention over an F16 cache picks kernels by batch shape (a
 * KV-split reduction for a lone one-token stream with ≥512 cells, a tiled kernel for long query runs),
 * hence flash attention is off unless the KV cache is quantized (then llama.cpp requires it, and its
 * kernel for quantized caches is shape-invariant). Verified on CPU; GPU backends are not claimed.
 *
 * Sampling is per row (each generator owns a llama.cpp sampler chain: temperature, top-k, top-p,
 * seeded dist, optional presence/frequency penalties). Stop strings are matched on the decoded text
 * with hold-back across token boundaries; text is decoded incrementally and UTF-8 safe.
 *
 * Untrusted model files are vetted in a child process before the daemon loads them (ModelValidator).
 */
import { randomInt } from "node:crypto";
import {
  GgmlType,
  getLlama,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  LlamaLogLevel,
  type LlamaModel,
  type SequenceEvaluateOptions,
  type Token,
} from "node-llama-cpp";
import {
  type Engine,
  EngineError,
  type EngineStats,
  type Generation,
  type GenerationRequest,
  type GenerationResult,
  type ModelFile,
  type SamplingOptions,
  type TokenEvent,
} from "../engine.js";
import { type ModelValidator, sharedModelValidator } from "./model-validator.js";
import { type RenderedPrompt, renderPrompt, resolveModelChatWrapper } from "./prompt.js";
import { IncrementalDetokenizer, StopMatcher } from "./text.js";

export interface LlamaEngineOptions {
  /** Batch rows per model (LlamaContext sequences). */
  maxBatch: number;
  /** Tokens per row: prompt + max_tokens above this is refused with "context_length_exceeded". */
  maxContext: number;
  /** KV-cache quantization: 8 → q8_0, 4 → q4_0 (both K and V; turns on flash attention). */
  kvBits?: 4 | 8 | undefined;
  /** CPU threads for evaluation (set explicitly: llama.cpp's default oversubscribes small machines). */
  threads: number;
  /**
   * Bytes a loaded model may take with its context (weights, KV cache of every row, compute
   * buffers). When `maxBatch` rows of `maxContext` tokens would take more, each row's context is
   * lowered to what fits (and logged); without it the context is allocated as asked.
   */
  memoryBudgetBytes?: number | undefined;
  /** Unload a model idle this long; 0 disables. The next request reloads it. */
  idleTimeoutMinutes: number;
  gpu: false | "auto";
  /** Generations allowed to wait for a row (per model) before "engine_busy" (default 256). */
  queueDepth?: number | undefined;
  /** Prompt tokens evaluated per prefill step (default 256); also the context's llama_decode batch size. */
  prefillChunk?: number | undefined;
  /** Vets model files before loading; `false` trusts every file (tests, pre-vetted files). Default: a process-wide validator. */
  validator?: ModelValidator | false | undefined;
  /** llama.cpp and engine log lines (default: errors to stderr). */
  onLog?: ((level: "debug" | "info" | "warn" | "error", message: string) => void) | undefined;
}

export interface LlamaEngineStats extends EngineStats {
  /** Recent decode rate summed over rows (tokens/s across the batch). */
  aggregateDecodeTokensPerSecond: number;
  /** Decode steps (one llama_decode over all decoding rows) since start. */
  decodeSteps: number;
  requestsCancelled: number;
  promptTokensProcessed: number;
}

type Phase = "preparing" | "queued" | "prefill" | "decoding" | "finished";

type Outcome = { ok: true; value: IteratorResult<Token, void> } | { ok: false; error: unknown };

interface Row {
  readonly index: number;
  readonly sequence: LlamaContextSequence;
  job: Job | undefined;
}

const EMA_ALPHA = 0.2;
const DEFAULT_QUEUE_DEPTH = 256;
const DEFAULT_PREFILL_CHUNK = 256;

function ema(previous: number, sample: number): number {
  if (!Number.isFinite(sample) || sample <= 0) return previous;
  return previous === 0 ? sample : previous + EMA_ALPHA * (sample - previous);
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const invalid = (message: string): EngineError => new EngineError("invalid_request", message, 400);

/** Checks a request's shape and sampling values; returns the seed to use. */
function validateRequest(request: GenerationRequest): number {
  const s: SamplingOptions | undefined = request?.sampling;
  if (!request || typeof request.id !== "string" || typeof request.model !== "string" || !s) {
    throw invalid("request must have an id, a model and sampling options");
  }
  const input = request.input;
  if (input?.kind === "text") {
    if (typeof input.prompt !== "string") throw invalid("prompt must be a string");
  } else if (input?.kind === "chat") {
    if (!Array.isArray(input.messages) || input.messages.length === 0)
      throw invalid("messages must not be empty");
    const roles = new Set(["system", "user", "assistant", "developer", "tool", "function"]);
    for (const m of input.messages) {
      if (!m || !roles.has(m.role) || typeof m.content !== "string")
        throw invalid("each message needs a role and text content");
    }
  } else {
    throw invalid('input.kind must be "chat" or "text"');
  }
  if (!Number.isFinite(s.temperature) || s.temperature < 0)
    throw invalid("temperature must be a number >= 0");
  if (!Number.isFinite(s.topP) || s.topP <= 0 || s.topP > 1) throw invalid("top_p must be in (0, 1]");
  if (!Number.isInteger(s.topK) || s.topK < 0) throw invalid("top_k must be an integer >= 0");
  if (!Number.isInteger(s.maxTokens) || s.maxTokens < 1) throw invalid("max_tokens must be an integer >= 1");
  if (!Array.isArray(s.stop) || s.stop.some((x) => typeof x !== "string"))
    throw invalid("stop must be a list of strings");
  if (s.stop.length > 16) throw invalid("at most 16 stop sequences are allowed");
  for (const p of [s.presencePenalty, s.frequencyPenalty]) {
    if (p !== undefined && (!Number.isFinite(p) || p < -2 || p > 2))
      throw invalid("penalties must be in [-2, 2]");
  }
  if (s.seed === undefined || s.seed === null) return randomInt(0, 2 ** 32);
  if (!Number.isSafeInteger(s.seed)) throw invalid("seed must be an integer");
  return ((s.seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
}

/** One submitted generation. */
class Job implements Generation {
  readonly done: Promise<GenerationResult>;
  phase: Phase = "preparing";
  settled = false;
  prompt: RenderedPrompt | undefined;
  promptTokens = 0;
  completionTokens = 0;
  readonly generated: Token[] = [];
  row: Row | undefined;
  iterator: AsyncGenerator<Token, void, undefined | Token | Token[]> | undefined;
  /** Prompt tokens not evaluated yet (phase "prefill"), fed in fixed-size chunks. */
  prefillOffset = 0;
  detokenizer: IncrementalDetokenizer | undefined;
  stop: StopMatcher;
  /** Tokens generated since the last onToken event. */
  unreportedTokens = 0;
  /** Sampling seed (the request's, or a random one). */
  seed = 0;
  private resolveDone!: (result: GenerationResult) => void;
  private rejectDone!: (err: unknown) => void;

  constructor(
    readonly request: GenerationRequest,
    readonly onToken: (event: TokenEvent) => void,
    private readonly onCancel: (job: Job) => void,
  ) {
    this.done = new Promise<GenerationResult>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // A consumer that never awaits `done` must not crash the daemon with an unhandled rejection.
    this.done.catch(() => {});
    this.stop = new StopMatcher(request?.sampling?.stop ?? []);
  }

  cancel(): void {
    if (this.settled) return;
    this.finish("cancelled");
    this.onCancel(this);
  }

  finish(reason: GenerationResult["finishReason"]): void {
    if (this.settled) return;
    this.settled = true;
    this.phase = "finished";
    this.resolveDone({
      promptTokens: this.promptTokens,
      completionTokens: this.completionTokens,
      finishReason: reason,
    });
  }

  fail(err: EngineError): void {
    if (this.settled) return;
    this.settled = true;
    this.phase = "finished";
    this.rejectDone(err);
  }

  emit(text: string): void {
    if (this.settled || text.length === 0) return;
    const event = { text, tokens: this.unreportedTokens };
    this.unreportedTokens = 0;
    this.onToken(event);
  }
}

/** A loaded model: its context, rows, queue and step loop state. */
class ModelRunner {
  readonly queue: Job[] = [];
  readonly active = new Set<Job>();
  loopRunning = false;
  loopDone: Promise<void> = Promise.resolve();
  idleTimer: NodeJS.Timeout | undefined;
  disposed = false;

  constructor(
    readonly file: ModelFile,
    readonly model: LlamaModel,
    readonly context: LlamaContext,
    readonly rows: Row[],
    readonly wrapper: ReturnType<typeof resolveModelChatWrapper>,
    /** The per-row token limit the gate enforces. */
    readonly maxContext: number,
  ) {}

  get busyRows(): number {
    let n = 0;
    for (const job of this.active) if (!job.settled) n++;
    return n;
  }

  get idle(): boolean {
    return this.queue.length === 0 && this.active.size === 0 && !this.loopRunning;
  }
}

export class LlamaEngine implements Engine {
  readonly backend = "llama";
  private readonly options: Required<
    Pick<LlamaEngineOptions, "maxBatch" | "maxContext" | "threads" | "idleTimeoutMinutes" | "gpu">
  > & {
    kvBits: 4 | 8 | undefined;
    queueDepth: number;
    prefillChunk: number;
    memoryBudgetBytes: number | undefined;
  };
  private readonly validator: ModelValidator | undefined;
  private readonly log: NonNullable<LlamaEngineOptions["onLog"]>;
  private llama: Promise<Llama> | undefined;
  private readonly known = new Map<string, ModelFile>();
  private readonly runners = new Map<string, ModelRunner>();
  private readonly loading = new Map<string, Promise<ModelRunner>>();
  private readonly preparing = new Set<Job>();
  private closed = false;
  private counters = {
    requestsCompleted: 0,
    requestsFailed: 0,
    requestsCancelled: 0,
    tokensGenerated: 0,
    promptTokensProcessed: 0,
    decodeSteps: 0,
  };
  private rates = { prefill: 0, decodePerRow: 0, decodeAggregate: 0 };

  constructor(options: LlamaEngineOptions) {
    const positiveInt = (name: string, v: unknown): number => {
      if (typeof v !== "number" || !Number.isInteger(v) || v < 1)
        throw new Error(`${name} must be a positive integer`);
      return v;
    };
    const maxBatch = positiveInt("maxBatch", options.maxBatch);
    const maxContext = positiveInt("maxContext", options.maxContext);
    const threads = positiveInt("threads", options.threads);
    if (options.kvBits !== undefined && options.kvBits !== 4 && options.kvBits !== 8)
      throw new Error("kvBits must be 4 or 8");
    if (!Number.isFinite(options.idleTimeoutMinutes) || options.idleTimeoutMinutes < 0) {
      throw new Error("idleTimeoutMinutes must be >= 0");
    }
    if (options.gpu !== false && options.gpu !== "auto") throw new Error('gpu must be false or "auto"');
    this.options = {
      maxBatch,
      maxContext,
      threads,
      kvBits: options.kvBits,
      memoryBudgetBytes: options.memoryBudgetBytes,
      idleTimeoutMinutes: options.idleTimeoutMinutes,
      gpu: options.gpu,
      queueDepth:
        options.queueDepth === undefined ? DEFAULT_QUEUE_DEPTH : Math.max(0, Math.floor(options.queueDepth)),
      prefillChunk:
        options.prefillChunk === undefined
          ? DEFAULT_PREFILL_CHUNK
          : positiveInt("prefillChunk", options.prefillChunk),
    };
    this.validator = options.validator === false ? undefined : (options.validator ?? sharedModelValidator);
    this.log =
      options.onLog ??
      ((level, message) => {
        if (level === "error") console.error(`[llama] ${message}`);
      });
  }

  // ---------------------------------------------------------------------------------------------
  // Models

  async load(file: ModelFile): Promise<void> {
    this.ensureOpen();
    if (!file || typeof file.id !== "string" || file.id === "" || typeof file.path !== "string") {
      throw new EngineError("invalid_request", "a model file needs an id and a path", 400);
    }
    const previous = this.known.get(file.id);
    if (previous && (previous.path !== file.path || previous.sha256 !== file.sha256))
      await this.dropRunner(file.id);
    this.known.set(file.id, file);
    try {
      await this.ensureRunner(file.id);
    } catch (err) {
      if (this.known.get(file.id) === file) this.known.delete(file.id);
      throw err;
    }
  }

  async unload(modelId: string): Promise<void> {
    this.known.delete(modelId);
    for (const job of this.preparing) {
      if (job.request.model === modelId)
        this.failJob(job, new EngineError("model_not_found", `model ${modelId} was unloaded`, 404));
    }
    await this.dropRunner(
      modelId,
      () => new EngineError("model_not_found", `model ${modelId} was unloaded`, 404),
    );
  }

  /** Known models (loaded or idle-unloaded). */
  models(): ModelFile[] {
    return [...this.known.values()];
  }

  private ensureOpen(): void {
    if (this.closed) throw new EngineError("engine_failed", "the engine is closed", 503);
  }

  private getLlama(): Promise<Llama> {
    this.llama ??= getLlama({
      gpu: this.options.gpu === false ? false : "auto",
      build: "never",
      skipDownload: true,
      maxThreads: this.options.threads,
      logLevel: LlamaLogLevel.warn,
      logger: (level, message) => {
        const text = message.trimEnd();
        if (text === "") return;
        if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) this.log("error", text);
        else if (level === LlamaLogLevel.warn) this.log("warn", text);
        else this.log("debug", text);
      },
    }).catch((err: unknown) => {
      this.llama = undefined;
      throw err;
    });
    return this.llama;
  }

  private ensureRunner(modelId: string): Promise<ModelRunner> {
    const existing = this.runners.get(modelId);
    if (existing && !existing.disposed) return Promise.resolve(existing);
    let pending = this.loading.get(modelId);
    if (!pending) {
      const file = this.known.get(modelId);
      if (!file)
        return Promise.reject(new EngineError("model_not_found", `model ${modelId} is not served here`, 404));
      pending = this.createRunner(file).finally(() => this.loading.delete(modelId));
      this.loading.set(modelId, pending);
    }
    return pending;
  }

  private async createRunner(file: ModelFile): Promise<ModelRunner> {
    const fail = (reason: string, cause?: unknown): EngineError =>
      new EngineError(
        "model_load_failed",
        `model ${file.id} (${file.path}) cannot be loaded: ${reason}`,
        500,
        { cause },
      );
    if (this.validator) {
      const verdict = await this.validator.validate(file.path, file.sha256);
      if (!verdict.ok) throw fail(verdict.reason ?? "it failed validation");
    }
    let llama: Llama;
    try {
      llama = await this.getLlama();
    } catch (err) {
      throw new EngineError("engine_failed", `llama.cpp is not available: ${errorMessage(err)}`, 500, {
        cause: err,
      });
    }
    this.ensureOpen();
    let model: LlamaModel | undefined;
    let context: LlamaContext | undefined;
    try {
      model = await llama.loadModel({
        modelPath: file.path,
        gpuLayers: this.options.gpu === false ? 0 : "auto",
      });
      const train = model.trainContextSize;
      const wanted = train > 0 ? Math.min(this.options.maxContext, train) : this.options.maxContext;
      const kvType = this.options.kvBits === 8 ? "Q8_0" : this.options.kvBits === 4 ? "Q4_0" : undefined;
      const batchSize = Math.max(this.options.prefillChunk, this.options.maxBatch);
      const maxContext = await this.fitContext(model, wanted, batchSize, kvType);
      context = await model.createContext({
        sequences: this.options.maxBatch,
        contextSize: maxContext,
        batchSize,
        threads: this.options.threads,
        // Flash attention only with a quantized KV cache (llama.cpp needs it to quantize V). With an
        // F16 cache, ggml's CPU flash attention picks kernels by batch shape (a KV-split reduction for
        // a single one-token stream, a tiled kernel for long query runs), so a row's logits would
        // depend on what else is in the batch; the regular attention path and the FA kernel for
        // quantized caches are batch-invariant.
        flashAttention: kvType !== undefined,
        ...(kvType ? { experimentalKvCacheKeyType: kvType, experimentalKvCacheValueType: kvType } : {}),
        failedCreationRemedy: false,
      });
      const rows: Row[] = [];
      for (let i = 0; i < this.options.maxBatch; i++)
        rows.push({ index: i, sequence: context.getSequence(), job: undefined });
      const wrapper = resolveModelChatWrapper(model);
      const runner = new ModelRunner(file, model, context, rows, wrapper, maxContext);
      if (this.closed || this.known.get(file.id) !== file) {
        await context.dispose();
        await model.dispose();
        throw new EngineError("model_not_found", `model ${file.id} was unloaded while loading`, 404);
      }
      this.runners.set(file.id, runner);
      this.log("info", `loaded ${file.id}: ${this.options.maxBatch} rows x ${maxContext} tokens`);
      this.scheduleIdle(runner);
      return runner;
    } catch (err) {
      if (err instanceof EngineError) throw err;
      await context?.dispose().catch(() => {});
      await model?.dispose().catch(() => {});
      throw fail(errorMessage(err), err);
    }
  }

  /**
   * The largest context per row, at most `wanted`, with which the model, `maxBatch` rows of KV cache
   * and the compute buffers fit the memory budget (llama.cpp allocates all of it up front: 4 rows of
   * Qwen3-0.6B's 40,960 tokens would be ~19 GB of F16 cache). At least 256 tokens (or `wanted`).
   */
  private async fitContext(
    model: LlamaModel,
    wanted: number,
    batchSize: number,
    kvType: "Q8_0" | "Q4_0" | undefined,
  ): Promise<number> {
    const budget = this.options.memoryBudgetBytes;
    if (budget === undefined) return wanted;
    const ggmlType = kvType === "Q8_0" ? GgmlType.Q8_0 : kvType === "Q4_0" ? GgmlType.Q4_0 : GgmlType.F16;
    const needs = async (contextSize: number): Promise<number> => {
      const r = await model.fileInsights.estimateContextResourceRequirementsV2({
        contextSize,
        modelGpuLayers: model.gpuLayers,
        batchSize,
        sequences: this.options.maxBatch,
        flashAttention: kvType !== undefined,
        kvCacheKeyType: ggmlType,
        kvCacheValueType: ggmlType,
      });
      return model.size + r.cpuRam + r.gpuVram;
    };
    if ((await needs(wanted)) <= budget) return wanted;
    let lo = Math.min(wanted, 256);
    let hi = wanted;
    while (hi - lo > 64) {
      const mid = Math.floor((lo + hi) / 2);
      if ((await needs(mid)) <= budget) lo = mid;
      else hi = mid;
    }
    const fitted = lo >= 64 ? lo - (lo % 64) : lo;
    const gib = (budget / 1024 ** 3).toFixed(1);
    this.log(
      "warn",
      `max context per row lowered from ${wanted} to ${fitted} tokens: ${this.options.maxBatch} rows of ${wanted} ` +
        `would not fit the ${gib} GiB memory budget (lower --max-batch for longer contexts)`,
    );
    return fitted;
  }

  /** The per-request context limit (prompt + max_tokens) of a loaded model; undefined when not loaded. */
  contextLimit(modelId: string): number | undefined {
    return this.runners.get(modelId)?.maxContext;
  }

  /** Stops a model's work (failing or cancelling its jobs), waits for its loop, and frees it. */
  private async dropRunner(modelId: string, reason?: () => EngineError): Promise<void> {
    const loading = this.loading.get(modelId);
    if (loading) await loading.catch(() => {});
    const runner = this.runners.get(modelId);
    if (!runner) return;
    for (const job of [...runner.queue, ...runner.active]) {
      if (job.settled) continue;
      if (reason) this.failJob(job, reason());
      else {
        job.finish("cancelled");
        this.counters.requestsCancelled++;
      }
    }
    runner.queue.length = 0;
    await runner.loopDone;
    await this.disposeRunner(runner);
  }

  private async disposeRunner(runner: ModelRunner): Promise<void> {
    if (runner.disposed) return;
    runner.disposed = true;
    clearTimeout(runner.idleTimer);
    if (this.runners.get(runner.file.id) === runner) this.runners.delete(runner.file.id);
    await runner.context.dispose().catch(() => {});
    await runner.model.dispose().catch(() => {});
    this.log("info", `unloaded ${runner.file.id}`);
  }

  private scheduleIdle(runner: ModelRunner): void {
    clearTimeout(runner.idleTimer);
    runner.idleTimer = undefined;
    if (this.options.idleTimeoutMinutes <= 0 || runner.disposed || !runner.idle) return;
    runner.idleTimer = setTimeout(() => {
      runner.idleTimer = undefined;
      const waiting = [...this.preparing].some((j) => j.request.model === runner.file.id);
      if (runner.idle && !waiting && !runner.disposed) void this.disposeRunner(runner);
    }, this.options.idleTimeoutMinutes * 60_000);
    runner.idleTimer.unref();
  }

  // ---------------------------------------------------------------------------------------------
  // Generation

  generate(request: GenerationRequest, onToken: (event: TokenEvent) => void): Generation {
    const job = new Job(request, onToken, (j) => this.onCancel(j));
    try {
      job.seed = validateRequest(request);
      if (typeof onToken !== "function") throw invalid("onToken must be a function");
      this.ensureOpen();
      if (!this.known.has(request.model)) {
        throw new EngineError("model_not_found", `model ${request.model} is not served here`, 404);
      }
    } catch (err) {
      this.failJob(job, err);
      return job;
    }
    this.preparing.add(job);
    void this.prepare(job);
    return job;
  }

  private failJob(job: Job, err: unknown): void {
    if (job.settled) return;
    const engineError =
      err instanceof EngineError
        ? err
        : new EngineError("engine_failed", `generation failed: ${errorMessage(err)}`, 500, { cause: err });
    job.fail(engineError);
    this.counters.requestsFailed++;
  }

  private async prepare(job: Job): Promise<void> {
    try {
      // Rendering and tokenizing the prompt is synchronous work of a millisecond or more: let the
      // caller's acknowledgement of the request (and other I/O) go out first.
      await new Promise((resolve) => setImmediate(resolve));
      let runner = await this.ensureRunner(job.request.model);
      if (runner.disposed) runner = await this.ensureRunner(job.request.model);
      if (job.settled) return;
      const prompt = renderPrompt(runner.model, runner.wrapper, job.request.input);
      if (prompt.tokens.length === 0) throw invalid("the prompt is empty");
      const max = job.request.sampling.maxTokens;
      if (prompt.tokens.length + max > runner.maxContext) {
        throw new EngineError(
          "context_length_exceeded",
          `This model's maximum context length is ${runner.maxContext} tokens. However, you requested ` +
            `${prompt.tokens.length + max} tokens (${prompt.tokens.length} in the prompt, ${max} for the completion).`,
          400,
        );
      }
      job.prompt = prompt;
      job.promptTokens = prompt.tokens.length;
      if (prompt.stopStrings.length > 0)
        job.stop = new StopMatcher([...job.request.sampling.stop, ...prompt.stopStrings]);
      if (runner.active.size + runner.queue.length >= runner.rows.length + this.options.queueDepth) {
        throw new EngineError(
          "engine_busy",
          `all ${runner.rows.length} rows are busy and ${runner.queue.length} requests are waiting`,
          503,
        );
      }
      job.phase = "queued";
      runner.queue.push(job);
      this.kick(runner);
    } catch (err) {
      this.failJob(job, err);
    } finally {
      this.preparing.delete(job);
    }
  }

  private onCancel(job: Job): void {
    this.counters.requestsCancelled++;
    this.preparing.delete(job);
    const runner = this.runners.get(job.request.model);
    if (!runner) return;
    const i = runner.queue.indexOf(job);
    if (i >= 0) runner.queue.splice(i, 1);
  }

  private kick(runner: ModelRunner): void {
    clearTimeout(runner.idleTimer);
    runner.idleTimer = undefined;
    if (runner.loopRunning) return; // the running loop admits queued jobs at its next step
    runner.loopRunning = true;
    runner.loopDone = this.runLoop(runner)
      .catch((err: unknown) => {
        this.log("error", `step loop for ${runner.file.id} failed: ${errorMessage(err)}`);
        for (const job of [...runner.queue, ...runner.active]) this.failJob(job, err);
      })
      .finally(() => {
        runner.loopRunning = false;
        if (!runner.disposed && runner.queue.some((j) => !j.settled)) this.kick(runner);
        else this.scheduleIdle(runner);
      });
  }

  private evaluateOptions(job: Job): SequenceEvaluateOptions {
    const s = job.request.sampling;
    const options: SequenceEvaluateOptions = {
      temperature: s.temperature,
      topK: s.topK,
      topP: s.topP,
      minP: 0,
      seed: job.seed,
    };
    if (s.presencePenalty || s.frequencyPenalty) {
      options.repeatPenalty = {
        punishTokens: () => job.generated.slice(-1024),
        maxPunishTokens: Math.min(1024, Math.max(64, s.maxTokens)),
        penalty: 1,
        presencePenalty: s.presencePenalty ?? 0,
        frequencyPenalty: s.frequencyPenalty ?? 0,
      };
    }
    return options;
  }

  /**
   * The step loop of one model; runs while any of its rows has work. Each round: retire finished
   * rows, admit queued jobs, one decode step over every decoding row, then one prompt chunk of the
   * oldest row still evaluating its prompt. Nothing else is queued on the context while a step runs,
   * so each step is one llama_decode whose composition depends only on the step kind.
   */
  private async runLoop(runner: ModelRunner): Promise<void> {
    for (;;) {
      await this.retire(runner);
      if (runner.disposed) return;
      this.admit(runner);
      const decoding = [...runner.active].filter((j) => j.phase === "decoding" && !j.settled);
      if (decoding.length > 0) await this.decodeStep(decoding);
      const prefill = [...runner.active].find((j) => j.phase === "prefill" && !j.settled);
      if (prefill) await this.prefillStep(prefill);
      if (decoding.length === 0 && !prefill && runner.active.size === 0 && runner.queue.length === 0) return;
    }
  }

  /** One token for every decoding row, all queued in the same tick: one batched decode. */
  private async decodeStep(decoding: Job[]): Promise<void> {
    const started = performance.now();
    const outcomes = await Promise.all(
      decoding.map((job) =>
        job.iterator!.next().then(
          (value): Outcome => ({ ok: true, value }),
          (error: unknown): Outcome => ({ ok: false, error }),
        ),
      ),
    );
    const ms = performance.now() - started;
    this.counters.decodeSteps++;
    this.rates.decodePerRow = ema(this.rates.decodePerRow, 1000 / ms);
    this.rates.decodeAggregate = ema(this.rates.decodeAggregate, (1000 * decoding.length) / ms);
    for (const [i, job] of decoding.entries()) this.handleOutcome(job, outcomes[i]!);
  }

  /**
   * The next `prefillChunk` tokens of one row's prompt, evaluated alone. Chunk boundaries depend only
   * on the prompt, never on what else is running: llama.cpp's numerics vary with how a prompt is
   * split into ubatches (and a non-unified KV cache splits mixed batches per sequence), so a prompt
   * evaluated alongside other rows' tokens could sample differently than it would alone. The last
   * chunk starts the row's token generator, whose first step samples the first completion token.
   */
  private async prefillStep(job: Job): Promise<void> {
    const tokens = job.prompt!.tokens;
    const row = job.row!;
    const start = job.prefillOffset;
    const end = Math.min(tokens.length, start + this.options.prefillChunk);
    const chunk = tokens.slice(start, end);
    const started = performance.now();
    let outcome: Outcome | undefined;
    if (end < tokens.length) {
      try {
        await row.sequence.evaluateWithoutGeneratingNewTokens(chunk);
      } catch (error) {
        outcome = { ok: false, error };
      }
    } else {
      job.iterator = row.sequence.evaluate(chunk, this.evaluateOptions(job));
      outcome = await job.iterator.next().then(
        (value): Outcome => ({ ok: true, value }),
        (error: unknown): Outcome => ({ ok: false, error }),
      );
    }
    const seconds = (performance.now() - started) / 1000;
    job.prefillOffset = end;
    if (!outcome || outcome.ok) {
      this.counters.promptTokensProcessed += chunk.length;
      if (seconds > 0) this.rates.prefill = ema(this.rates.prefill, chunk.length / seconds);
    }
    if (outcome) {
      if (job.phase === "prefill") job.phase = "decoding";
      this.handleOutcome(job, outcome);
    }
  }

  private admit(runner: ModelRunner): void {
    while (runner.queue.length > 0) {
      const row = runner.rows.find((r) => r.job === undefined);
      if (!row) return;
      const job = runner.queue.shift()!;
      if (job.settled || !job.prompt) continue;
      row.job = job;
      job.row = row;
      job.phase = "prefill";
      job.prefillOffset = 0;
      job.detokenizer = new IncrementalDetokenizer(runner.model);
      runner.active.add(job);
    }
  }

  private async retire(runner: ModelRunner): Promise<void> {
    for (const job of [...runner.active]) {
      if (!job.settled) continue;
      runner.active.delete(job);
      const row = job.row;
      job.row = undefined;
      try {
        await job.iterator?.return();
      } catch {
        // the generator already failed
      }
      if (row) {
        try {
          await row.sequence.clearHistory();
        } catch (err) {
          this.log("warn", `clearing row ${row.index} of ${runner.file.id} failed: ${errorMessage(err)}`);
        }
        row.job = undefined;
      }
    }
  }

  /** Applies one generator step to a job: emit text, detect stops, length and end of generation. */
  private handleOutcome(job: Job, outcome: Outcome): void {
    if (job.settled) return;
    if (!outcome.ok) {
      this.failJob(job, outcome.error);
      return;
    }
    const result = outcome.value;
    if (result.done || job.prompt?.stopTokens.has(result.value)) {
      this.complete(job, "stop", true);
      return;
    }
    const token = result.value;
    job.completionTokens++;
    job.unreportedTokens++;
    job.generated.push(token);
    this.counters.tokensGenerated++;
    try {
      const piece = job.detokenizer!.push(token);
      if (piece !== "") {
        const { emit, stopped } = job.stop.push(piece);
        job.emit(emit);
        if (stopped) {
          this.complete(job, "stop", false);
          return;
        }
      }
      if (job.completionTokens >= job.request.sampling.maxTokens) this.complete(job, "length", true);
    } catch (err) {
      this.failJob(job, err);
    }
  }

  private complete(job: Job, reason: "stop" | "length", flush: boolean): void {
    if (job.settled) return;
    if (flush) {
      try {
        const rest = job.detokenizer?.flush() ?? "";
        const { emit, stopped } = job.stop.push(rest);
        job.emit(emit);
        if (!stopped) job.emit(job.stop.flush());
        else reason = "stop";
      } catch (err) {
        this.failJob(job, err);
        return;
      }
    }
    job.finish(reason);
    this.counters.requestsCompleted++;
  }

  // ---------------------------------------------------------------------------------------------

  stats(): LlamaEngineStats {
    let busySlots = 0;
    let queueDepth = this.preparing.size;
    let usedCells = 0;
    let totalCells = 0;
    for (const runner of this.runners.values()) {
      busySlots += runner.busyRows;
      queueDepth += runner.queue.length;
      totalCells += runner.context.contextSize * runner.rows.length;
      for (const row of runner.rows) {
        if (row.job && !row.sequence.disposed) usedCells += row.sequence.nextTokenIndex;
      }
    }
    return {
      busySlots,
      queueDepth,
      kvCacheUsage: totalCells === 0 ? 0 : Math.min(1, usedCells / totalCells),
      prefillTokensPerSecond: this.rates.prefill,
      decodeTokensPerSecond: this.rates.decodePerRow,
      aggregateDecodeTokensPerSecond: this.rates.decodeAggregate,
      loadedModels: [...this.runners.keys()],
      requestsCompleted: this.counters.requestsCompleted,
      requestsFailed: this.counters.requestsFailed,
      requestsCancelled: this.counters.requestsCancelled,
      tokensGenerated: this.counters.tokensGenerated,
      promptTokensProcessed: this.counters.promptTokensProcessed,
      decodeSteps: this.counters.decodeSteps,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const job of [...this.preparing]) job.cancel();
    await Promise.all([...this.loading.values()].map((p) => p.catch(() => {})));
    await Promise.all([...this.runners.keys()].map((id) => this.dropRunner(id)));
    const llama = this.llama;
    this.llama = undefined;
    if (llama) await (await llama.catch(() => undefined))?.dispose();
  }
}
