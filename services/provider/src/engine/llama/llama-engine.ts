/**
 * The `llama` engine: llama.cpp through node-llama-cpp, with continuous batching. Its parts:
 * - model-runner.ts: a loaded model, its context and batch rows, sized to the memory budget;
 * - step-loop.ts: the per-model loop that batches every row's decode into one llama_decode and
 *   interleaves prompt chunks, and why its output does not depend on what else runs;
 * - job.ts: one generation's own state (prompt, sampling, detokenizer, stop strings);
 * - meters.ts: the counters and rates stats() reports.
 * This class owns the models (load, unload, idle unload), admission (validation, the context gate,
 * the queue bound) and the engine's lifecycle.
 *
 * Untrusted model files are vetted in a child process before the daemon loads them (ModelValidator).
 */
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import type { CpuTopology } from "../../machine/topology.js";
import {
  type Engine,
  type EngineDevice,
  EngineError,
  type EngineObserver,
  type EngineStats,
  type Generation,
  type GenerationRequest,
  type ModelFile,
  type ModelLoadEvent,
  type TokenEvent,
} from "../engine.js";
import { contextLengthExceeded, invalid, validateRequest } from "../generation-job.js";
import { EngineMeters, errorMessage } from "../meters.js";
import { StopMatcher } from "../text.js";
import { ThreadSetting } from "../threads.js";
import { Job } from "./job.js";
import {
  type EngineLog,
  loadFailure,
  type ModelRunner,
  openModelRunner,
  type RunnerSettings,
} from "./model-runner.js";
import { type ModelValidator, sharedModelValidator } from "./model-validator.js";
import { StepLoop } from "./step-loop.js";

export interface LlamaEngineOptions {
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
  totalSlots: number;
  kvCacheTokens: number;
  kvCacheCapacityTokens: number;
  promptTokensProcessed: number;
  prefillSeconds: number;
  decodeSeconds: number;
}

const DEFAULT_QUEUE_DEPTH = 256;
const DEFAULT_PREFILL_CHUNK = 256;

export class LlamaEngine implements Engine {
  readonly backend = "llama";
  private readonly settings: Omit<RunnerSettings, "threads"> & {
    idleTimeoutMinutes: number;
    queueDepth: number;
  };
  private readonly threads: ThreadSetting;
  private readonly validator: ModelValidator | undefined;
  private readonly log: EngineLog;
  private readonly meters = new EngineMeters();
  private readonly loop: StepLoop;
  private llama: Promise<Llama> | undefined;
  private readonly known = new Map<string, ModelFile>();
  private readonly runners = new Map<string, ModelRunner>();
  private readonly loading = new Map<string, Promise<ModelRunner>>();
  private readonly preparing = new Set<Job>();
  private observer: EngineObserver | undefined;
  private closed = false;

  constructor(options: LlamaEngineOptions) {
    const positiveInt = (name: string, v: unknown): number => {
      if (typeof v !== "number" || !Number.isInteger(v) || v < 1)
        throw new Error(`${name} must be a positive integer`);
      return v;
    };
    const maxBatch = positiveInt("maxBatch", options.maxBatch);
    const maxContext = positiveInt("maxContext", options.maxContext);
    this.threads = new ThreadSetting(
      options.threads === "auto" ? "auto" : positiveInt("threads", options.threads),
      options.coreShare === undefined ? undefined : positiveInt("coreShare", options.coreShare),
      options.topology,
    );
    if (options.kvBits !== undefined && options.kvBits !== 4 && options.kvBits !== 8)
      throw new Error("kvBits must be 4 or 8");
    if (!Number.isFinite(options.idleTimeoutMinutes) || options.idleTimeoutMinutes < 0) {
      throw new Error("idleTimeoutMinutes must be >= 0");
    }
    if (options.gpu !== false && options.gpu !== "auto") throw new Error('gpu must be false or "auto"');
    this.settings = {
      maxBatch,
      maxContext,
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
    this.loop = new StepLoop(this.settings.prefillChunk, this.meters, this.log, (runner) =>
      this.scheduleIdle(runner),
    );
  }

  /**
   * What node-llama-cpp loaded: its GPU binding (false when it found none, or with gpu: false), the
   * devices it sees and their memory. VRAM is reported as one total, shared out among the devices.
   */
  async device(): Promise<EngineDevice> {
    const llama = await this.getLlama();
    if (llama.gpu === false) return { accelerator: "cpu", gpus: [] };
    const [names, vram] = await Promise.all([llama.getGpuDeviceNames(), llama.getVramState()]);
    const listed = names.length > 0 ? names : [llama.gpu];
    const each = Math.floor(vram.total / listed.length);
    return { accelerator: llama.gpu, gpus: listed.map((name) => ({ name, memoryBytes: each })) };
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
        this.meters.failJob(job, new EngineError("model_not_found", `model ${modelId} was unloaded`, 404));
    }
    await this.dropRunner(
      modelId,
      () => new EngineError("model_not_found", `model ${modelId} was unloaded`, 404),
    );
  }

  observe(observer: EngineObserver | undefined): void {
    this.observer = observer;
  }

  /** Known models (loaded or idle-unloaded). */
  models(): ModelFile[] {
    return [...this.known.values()];
  }

  private ensureOpen(): void {
    if (this.closed) throw new EngineError("engine_failed", "the engine is closed", 503);
  }

  /** The thread count a loaded model evaluates with (what "auto" chose for it); undefined when not loaded. */
  threadsFor(modelId: string): number | undefined {
    return this.runners.get(modelId)?.threads;
  }

  private async getLlama(): Promise<Llama> {
    // The instance's thread limit is what all its contexts share when several models decode at once:
    // the explicit count, or for "auto" the cores the choices are capped at.
    const maxThreads = await this.threads.maxThreads();
    this.llama ??= getLlama({
      gpu: this.settings.gpu === false ? false : "auto",
      build: "never",
      skipDownload: true,
      maxThreads,
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
      const started = performance.now();
      const report = (outcome: ModelLoadEvent["outcome"]) =>
        this.observer?.modelLoad({ model: modelId, outcome, seconds: (performance.now() - started) / 1000 });
      pending = this.createRunner(file)
        .then(
          (runner) => {
            report("loaded");
            return runner;
          },
          (err: unknown) => {
            // Unloaded or closed while loading is not the file's failure.
            const abandoned = this.closed || (err instanceof EngineError && err.code === "model_not_found");
            report(abandoned ? "cancelled" : "failed");
            throw err;
          },
        )
        .finally(() => this.loading.delete(modelId));
      this.loading.set(modelId, pending);
    }
    return pending;
  }

  /** Vets the file, loads it and registers its runner; the idle timer starts at once. */
  private async createRunner(file: ModelFile): Promise<ModelRunner> {
    if (this.validator) {
      const verdict = await this.validator.validate(file.path, file.sha256);
      if (!verdict.ok) throw loadFailure(file, verdict.reason ?? "it failed validation");
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
    const threads = await this.threads.forModel(file.sizeBytes);
    const runner = await openModelRunner(
      llama,
      file,
      { ...this.settings, threads: threads.threads },
      this.log,
      () => !this.closed && this.known.get(file.id) === file,
    );
    this.runners.set(file.id, runner);
    this.log(
      "info",
      `loaded ${file.id}: ${this.settings.maxBatch} rows x ${runner.maxContext} tokens, ` +
        `${threads.threads} CPU thread${threads.threads === 1 ? "" : "s"} (${threads.reason})`,
    );
    this.scheduleIdle(runner);
    return runner;
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
      if (reason) this.meters.failJob(job, reason());
      else {
        job.finish("cancelled");
        this.meters.counters.requestsCancelled++;
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
    await runner.free();
    this.log("info", `unloaded ${runner.file.id}`);
  }

  private scheduleIdle(runner: ModelRunner): void {
    clearTimeout(runner.idleTimer);
    runner.idleTimer = undefined;
    if (this.settings.idleTimeoutMinutes <= 0 || runner.disposed || !runner.idle) return;
    runner.idleTimer = setTimeout(() => {
      runner.idleTimer = undefined;
      const waiting = [...this.preparing].some((j) => j.request.model === runner.file.id);
      if (runner.idle && !waiting && !runner.disposed) void this.disposeRunner(runner);
    }, this.settings.idleTimeoutMinutes * 60_000);
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
      this.meters.failJob(job, err);
      return job;
    }
    this.preparing.add(job);
    void this.prepare(job);
    return job;
  }

  private async prepare(job: Job): Promise<void> {
    try {
      // Rendering and tokenizing the prompt is synchronous work of a millisecond or more: let the
      // caller's acknowledgement of the request (and other I/O) go out first.
      await new Promise((resolve) => setImmediate(resolve));
      let runner = await this.ensureRunner(job.request.model);
      if (runner.disposed) runner = await this.ensureRunner(job.request.model);
      if (job.settled) return;
      const prompt = runner.tokenizer.render(job.request.input);
      if (prompt.tokens.length === 0) throw invalid("the prompt is empty");
      const max = job.request.sampling.maxTokens;
      if (prompt.tokens.length + max > runner.maxContext) {
        throw contextLengthExceeded(runner.maxContext, prompt.tokens.length, max);
      }
      job.prompt = prompt;
      job.promptTokens = prompt.tokens.length;
      if (prompt.stopStrings.length > 0)
        job.stop = new StopMatcher([...job.request.sampling.stop, ...prompt.stopStrings]);
      if (runner.active.size + runner.queue.length >= runner.rows.length + this.settings.queueDepth) {
        throw new EngineError(
          "engine_busy",
          `all ${runner.rows.length} rows are busy and ${runner.queue.length} requests are waiting`,
          503,
        );
      }
      job.phase = "queued";
      runner.queue.push(job);
      this.loop.kick(runner);
    } catch (err) {
      this.meters.failJob(job, err);
    } finally {
      this.preparing.delete(job);
    }
  }

  private onCancel(job: Job): void {
    this.meters.counters.requestsCancelled++;
    this.preparing.delete(job);
    const runner = this.runners.get(job.request.model);
    if (!runner) return;
    const i = runner.queue.indexOf(job);
    if (i >= 0) runner.queue.splice(i, 1);
  }

  // ---------------------------------------------------------------------------------------------

  stats(): LlamaEngineStats {
    let busySlots = 0;
    let totalSlots = 0;
    let queueDepth = this.preparing.size;
    let usedCells = 0;
    let totalCells = 0;
    for (const runner of this.runners.values()) {
      busySlots += runner.busyRows;
      totalSlots += runner.rows.length;
      queueDepth += runner.queue.length;
      const cells = runner.cells();
      usedCells += cells.used;
      totalCells += cells.total;
    }
    const { counters, rates } = this.meters;
    return {
      busySlots,
      totalSlots,
      queueDepth,
      kvCacheUsage: totalCells === 0 ? 0 : Math.min(1, usedCells / totalCells),
      kvCacheTokens: usedCells,
      kvCacheCapacityTokens: totalCells,
      prefillTokensPerSecond: rates.prefill,
      decodeTokensPerSecond: rates.decodePerRow,
      aggregateDecodeTokensPerSecond: rates.decodeAggregate,
      loadedModels: [...this.runners.keys()],
      requestsCompleted: counters.requestsCompleted,
      requestsFailed: counters.requestsFailed,
      requestsCancelled: counters.requestsCancelled,
      tokensGenerated: counters.tokensGenerated,
      promptTokensProcessed: counters.promptTokensProcessed,
      prefillSeconds: counters.prefillSeconds,
      decodeSeconds: counters.decodeSeconds,
      decodeSteps: counters.decodeSteps,
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
