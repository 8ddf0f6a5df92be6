/**
 * The `native-llama` engine: llama.cpp through the project's own addon (@darkbloom/native/llama), a
 * continuous-batching core in C++ with one engine thread per model (native-runner.ts). It takes the
 * llama engine's options with the same meanings and shares what is not tied to node-llama-cpp:
 * request validation, text, stop strings and billing (generation-job.ts), meters, the threads
 * choice, the model validator and the memory-budget fit. node-llama-cpp is used only for the
 * vocabulary-only tokenizer that renders prompts and counts text, never for weights.
 *
 * The addon is built for the CPU: `gpu` is accepted for option compatibility and ignored.
 */
import { llamaErrorCode } from "@darkbloom/native/llama";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import {
  type Engine,
  type EngineDevice,
  EngineError,
  type EngineObserver,
  type Generation,
  type GenerationRequest,
  type ModelFile,
  type ModelLoadEvent,
  type TokenEvent,
} from "../engine.js";
import { contextLengthExceeded, invalid, validateRequest } from "../generation-job.js";
import type { LlamaEngineOptions, LlamaEngineStats } from "../llama/llama-engine.js";
import { loadFailure } from "../llama/model-runner.js";
import { type ModelValidator, sharedModelValidator } from "../llama/model-validator.js";
import { EngineMeters, errorMessage } from "../meters.js";
import { IncrementalDetokenizer, StopMatcher } from "../text.js";
import { ThreadSetting } from "../threads.js";
import { NativeJob, type NativeJobHost, nativeEngineError } from "./native-job.js";
import {
  type EngineLog,
  type NativeRunner,
  type NativeRunnerSettings,
  openNativeRunner,
} from "./native-runner.js";

/** The llama engine's options; `gpu` is optional and ignored (the addon computes on the CPU). */
export type NativeEngineOptions = Omit<LlamaEngineOptions, "gpu"> & { gpu?: LlamaEngineOptions["gpu"] };

/** The llama engine's stats, measured by the native schedulers. */
export type NativeEngineStats = LlamaEngineStats;

const DEFAULT_QUEUE_DEPTH = 256;
const DEFAULT_PREFILL_CHUNK = 256;

export class NativeEngine implements Engine {
  readonly backend = "native-llama";
  private readonly settings: Omit<NativeRunnerSettings, "threads"> & { idleTimeoutMinutes: number };
  private readonly threads: ThreadSetting;
  private readonly validator: ModelValidator | undefined;
  private readonly log: EngineLog;
  private readonly meters = new EngineMeters();
  private llama: Promise<Llama> | undefined;
  private readonly known = new Map<string, ModelFile>();
  private readonly runners = new Map<string, NativeRunner>();
  private readonly loading = new Map<string, Promise<NativeRunner>>();
  private readonly preparing = new Set<NativeJob>();
  private readonly runnerOf = new Map<NativeJob, NativeRunner>();
  private observer: EngineObserver | undefined;
  private closed = false;
  private nextId = 0;
  private readonly host: NativeJobHost = {
    cancel: (job) => this.runnerOf.get(job)?.scheduler.cancel(job.schedulerId),
    settled: (job, outcome) => this.onSettled(job, outcome),
    tokenGenerated: () => {
      this.meters.counters.tokensGenerated++;
    },
  };

  constructor(options: NativeEngineOptions) {
    const positiveInt = (name: string, v: unknown): number => {
      if (typeof v !== "number" || !Number.isInteger(v) || v < 1)
        throw new Error(`${name} must be a positive integer`);
      return v;
    };
    const maxBatch = positiveInt("maxBatch", options.maxBatch);
    if (maxBatch > 256) throw new Error("maxBatch must be at most 256 on the native engine");
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
    this.settings = {
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
    this.validator = options.validator === false ? undefined : (options.validator ?? sharedModelValidator);
    this.log =
      options.onLog ??
      ((level, message) => {
        if (level === "error") console.error(`[native-llama] ${message}`);
      });
  }

  /** The addon is built for the CPU only. */
  async device(): Promise<EngineDevice> {
    return { accelerator: "cpu", gpus: [] };
  }

  // ---------------------------------------------------------------------------------------------
  // Models (as the llama engine: load vets and loads at once, unload forgets, idle unload frees and
  // the next request reloads)

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
    const gone = () => new EngineError("model_not_found", `model ${modelId} was unloaded`, 404);
    for (const job of this.preparing) if (job.request.model === modelId) this.meters.failJob(job, gone());
    await this.dropRunner(modelId, gone);
  }

  observe(observer: EngineObserver | undefined): void {
    this.observer = observer;
  }

  /** Known models (loaded or idle-unloaded). */
  models(): ModelFile[] {
    return [...this.known.values()];
  }

  threadsFor(modelId: string): number | undefined {
    return this.runners.get(modelId)?.threads;
  }

  contextLimit(modelId: string): number | undefined {
    return this.runners.get(modelId)?.maxContext;
  }

  private ensureOpen(): void {
    if (this.closed) throw new EngineError("engine_failed", "the engine is closed", 503);
  }

  /** node-llama-cpp for the tokenizers only: no GPU, one thread, its prebuilt binary. */
  private getLlama(): Promise<Llama> {
    this.llama ??= getLlama({
      gpu: false,
      build: "never",
      skipDownload: true,
      maxThreads: 1,
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

  private ensureRunner(modelId: string): Promise<NativeRunner> {
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

  /** Vets the file (a crash of llama.cpp on it must happen in a child), loads it, starts the idle timer. */
  private async createRunner(file: ModelFile): Promise<NativeRunner> {
    if (this.validator) {
      const verdict = await this.validator.validate(file.path, file.sha256);
      if (!verdict.ok) throw loadFailure(file, verdict.reason ?? "it failed validation");
    }
    let llama: Llama;
    try {
      llama = await this.getLlama();
    } catch (err) {
      throw new EngineError("engine_failed", `node-llama-cpp is not available: ${errorMessage(err)}`, 500, {
        cause: err,
      });
    }
    this.ensureOpen();
    const threads = await this.threads.forModel(file.sizeBytes);
    const runner = await openNativeRunner(
      llama,
      file,
      { ...this.settings, threads: threads.threads },
      this.log,
      () => !this.closed && this.known.get(file.id) === file,
    );
    this.runners.set(file.id, runner);
    this.log(
      "info",
      `loaded ${file.id}: ${runner.rows} rows x ${runner.maxContext} tokens, ` +
        `${threads.threads} CPU thread${threads.threads === 1 ? "" : "s"} (${threads.reason})`,
    );
    this.scheduleIdle(runner);
    return runner;
  }

  /** Ends a model's jobs (failing them with `reason`, else cancelling them) and frees it. */
  private async dropRunner(modelId: string, reason?: () => EngineError): Promise<void> {
    const loading = this.loading.get(modelId);
    if (loading) await loading.catch(() => {});
    const runner = this.runners.get(modelId);
    if (!runner) return;
    for (const job of [...runner.jobs]) {
      if (reason) {
        this.meters.failJob(job, reason());
        this.forget(job);
      } else job.cancel();
    }
    await this.disposeRunner(runner);
  }

  private async disposeRunner(runner: NativeRunner): Promise<void> {
    if (runner.disposed) return;
    runner.sample(this.meters);
    runner.disposed = true;
    clearTimeout(runner.idleTimer);
    if (this.runners.get(runner.file.id) === runner) this.runners.delete(runner.file.id);
    await runner.free();
    this.log("info", `unloaded ${runner.file.id}`);
  }

  private scheduleIdle(runner: NativeRunner): void {
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
    const job = new NativeJob(request, onToken, this.host);
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

  private async prepare(job: NativeJob): Promise<void> {
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
      if (prompt.tokens.length + max > runner.maxContext)
        throw contextLengthExceeded(runner.maxContext, prompt.tokens.length, max);
      job.prompt = prompt;
      job.promptTokens = prompt.tokens.length;
      if (prompt.stopStrings.length > 0)
        job.stop = new StopMatcher([...job.request.sampling.stop, ...prompt.stopStrings]);
      job.tokenizer = runner.tokenizer;
      job.detokenizer = new IncrementalDetokenizer(runner.tokenizer.model);
      job.schedulerId = `${++this.nextId}`;
      try {
        // Throws busy past rows + queueDepth, as the llama engine's admission does.
        runner.scheduler.submit(
          {
            id: job.schedulerId,
            prompt: Int32Array.from(prompt.tokens),
            maxTokens: max,
            sampling: job.sampling(),
          },
          (event) => {
            job.onEvent(event);
            runner.sample(this.meters, true);
          },
        );
      } catch (err) {
        throw nativeEngineError(llamaErrorCode(err), errorMessage(err), err);
      }
      job.submitted = true;
      job.phase = "queued";
      this.runnerOf.set(job, runner);
      runner.jobs.add(job);
      clearTimeout(runner.idleTimer);
      runner.idleTimer = undefined;
    } catch (err) {
      this.meters.failJob(job, err);
    } finally {
      this.preparing.delete(job);
    }
  }

  /** A job ended (completed, cancelled by its consumer or the engine, or failed by an error event). */
  private onSettled(job: NativeJob, outcome: "completed" | "cancelled" | "failed"): void {
    const { counters } = this.meters;
    if (outcome === "completed") counters.requestsCompleted++;
    else if (outcome === "cancelled") counters.requestsCancelled++;
    else counters.requestsFailed++;
    this.preparing.delete(job);
    this.forget(job);
  }

  private forget(job: NativeJob): void {
    const runner = this.runnerOf.get(job);
    this.runnerOf.delete(job);
    if (!runner) return;
    runner.jobs.delete(job);
    if (runner.idle) this.scheduleIdle(runner);
  }

  // ---------------------------------------------------------------------------------------------

  stats(): NativeEngineStats {
    let busySlots = 0;
    let totalSlots = 0;
    let queueDepth = this.preparing.size;
    let usedCells = 0;
    let totalCells = 0;
    for (const runner of this.runners.values()) {
      runner.sample(this.meters);
      totalSlots += runner.rows;
      const s = runner.schedulerStats();
      if (!s) continue;
      // A row whose request settled here (cancelled, stopped) is freed at the scheduler's next step:
      // count only rows and queue places of requests still unsettled.
      const busy = Math.min(s.busyRows, runner.jobs.size);
      busySlots += busy;
      queueDepth += Math.min(s.queued, runner.jobs.size - busy);
      usedCells += s.kvCellsUsed;
      totalCells += s.kvCells;
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
