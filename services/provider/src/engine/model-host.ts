/**
 * What the llama, native-llama and mlx engines have in common above their decoding: the options they
 * all take (host-options.ts), and the lifecycle of loaded models (ModelHostEngine). Load vets a model
 * in a child process and loads it at once, unload forgets it (failing its work), an idle model is
 * freed and reloaded by the next request; generation validates a request, waits for the model,
 * renders the prompt and applies the context gate before the engine hands the job to its own
 * batching. Every engine also uses one node-llama-cpp instance (for weights, or for tokenizers only),
 * owned here so it is made and disposed the same way.
 *
 * The contract with an engine: its runners are HostedRunners, its jobs GenerationJobs, and it supplies
 * the hooks below for what differs (opening a runner, ending a dropped runner's jobs, submitting a job,
 * the instance's GPU and thread limit, its log text), the model format's part included (the format it
 * loads, its default validator): the mlx engine serves checkpoint directories through the same
 * lifecycle, with the vocabulary converted from each checkpoint's tokenizer.json (engine/mlx/).
 */
import type { ModelTokenizer, RenderedPrompt } from "@darkbloom/models";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import {
  type Engine,
  type EngineDevice,
  EngineError,
  type EngineObserver,
  type EngineStats,
  type Generation,
  type GenerationRequest,
  type ModelFile,
  type ModelFormat,
  type ModelLoadEvent,
  type TokenEvent,
} from "./engine.js";
import { formatRefusal } from "./formats.js";
import { contextLengthExceeded, type GenerationJob, invalid, validateRequest } from "./generation-job.js";
import {
  checkHostOptions,
  type HostSettings,
  type ModelHostOptions,
  type ModelVetter,
  type OptionChecks,
} from "./host-options.js";
import { type EngineLog, loadFailure } from "./llama/model-runner.js";
import { EngineMeters, errorMessage } from "./meters.js";
import { StopMatcher } from "./text.js";
import type { ThreadSetting } from "./threads.js";

export type { HostSettings, ModelHostOptions, ModelVetter, OptionChecks };

export interface ModelHostStats extends EngineStats {
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

/** A runner's share of the engine's stats. */
export interface RunnerLoad {
  rows: number;
  busyRows: number;
  queued: number;
  usedCells: number;
  totalCells: number;
}

/** What the host needs of a loaded model. */
export interface HostedRunner {
  readonly file: ModelFile;
  /** The per-row token limit the context gate enforces. */
  readonly maxContext: number;
  /** CPU threads it evaluates with. */
  readonly threads: number;
  /** Renders prompts (and counts the text emitted). */
  readonly tokenizer: ModelTokenizer;
  /** Nothing queued or running: the idle timer may run. */
  readonly idle: boolean;
  /** Set once, when it is being freed; a disposed runner is never handed out again. */
  disposed: boolean;
  idleTimer: NodeJS.Timeout | undefined;
  /** Frees everything it holds; must not throw. */
  free(): Promise<void>;
}

/** How the shared node-llama-cpp instance is made. */
export interface LlamaSetup {
  gpu: false | "auto";
  maxThreads: number;
  /**
   * It opens vocabulary-only GGUFs alone (the mlx engine's tokenizers): node-llama-cpp first sizes a
   * full load of such a file and reports the missing tensors as errors, so all it says is debug.
   */
  vocabularyOnly?: boolean;
}

export abstract class ModelHostEngine<R extends HostedRunner, J extends GenerationJob> implements Engine {
  abstract readonly backend: string;
  /** Whether the engine enforces `sampling.grammar` (Engine.constrains, for every model it serves). */
  protected abstract readonly enforcesGrammar: boolean;
  /**
   * Whether its jobs are given each sampled token's piece and raw log-probabilities (Engine.logprobs,
   * for every model it generates with): only a core that sees the logits before sampling can.
   */
  protected readonly reportsLogprobs: boolean = false;
  protected readonly settings: HostSettings;
  protected readonly threads: ThreadSetting;
  protected readonly validator: ModelVetter | undefined;
  protected readonly log: EngineLog;
  protected readonly meters = new EngineMeters();
  protected readonly known = new Map<string, ModelFile>();
  protected readonly runners = new Map<string, R>();
  protected readonly loading = new Map<string, Promise<R>>();
  /** Jobs accepted but not yet handed to a runner (waiting for the model or rendering the prompt). */
  protected readonly preparing = new Set<J>();
  protected closed = false;
  private llama: Promise<Llama> | undefined;
  private observer: EngineObserver | undefined;

  /** Checks the common options in a fixed order (so a bad option is reported the same on both engines). */
  protected constructor(options: ModelHostOptions, checks: OptionChecks = {}) {
    const checked = checkHostOptions(options, checks);
    this.settings = checked.settings;
    this.threads = checked.threads;
    this.validator = checked.validator;
    // `backend` is read when a line is logged (a subclass's field is not set yet here).
    this.log =
      options.onLog ??
      ((level, message) => {
        if (level === "error") console.error(`[${this.backend}] ${message}`);
      });
  }

  // ---------------------------------------------------------------------------------------------
  // Hooks: what each engine does its own way

  abstract device(): Promise<EngineDevice>;
  /** The model format this engine loads (a model of another is refused: unsupported()). */
  protected readonly modelFormat: ModelFormat = "gguf";
  /** The node-llama-cpp instance's GPU use and thread limit (shared by all its contexts). */
  protected abstract llamaSetup(): Promise<LlamaSetup>;
  /** What the log and errors call that instance when it cannot be had ("llama.cpp", "node-llama-cpp"). */
  protected abstract readonly runtimeName: string;
  /**
   * Loads `file` with `threads` CPU threads. `stillWanted` is asked once everything is allocated: when
   * false (unloaded or closed meanwhile) the runner must free itself and reject with model_not_found.
   */
  protected abstract openRunner(
    llama: Llama,
    file: ModelFile,
    threads: number,
    stillWanted: () => boolean,
  ): Promise<R>;
  /** The rows a loaded model is reported with in the "loaded" line. */
  protected abstract rowCount(runner: R): number;
  /**
   * Ends the jobs of a runner being dropped: fails them with `reason()`, or without one (close, a
   * changed file) cancels them; resolves when the runner may be freed.
   */
  protected abstract endJobs(runner: R, reason: (() => EngineError) | undefined): Promise<void> | undefined;
  /** Makes the engine's job for a request (it is validated after). */
  protected abstract createJob(request: GenerationRequest, onToken: (event: TokenEvent) => void): J;
  /**
   * Hands a job whose prompt passed the context gate to its runner's batching; throws (engine_busy,
   * ...) to fail it. Called synchronously after the checks, so the runner is not disposed meanwhile.
   */
  protected abstract submit(job: J, runner: R, prompt: RenderedPrompt): void;
  /** Called once before a runner is freed (e.g. to fold its last counters into the meters). */
  protected disposing(_runner: R): void {}
  /** What the "loaded" line says the model computes with (default: its CPU threads and why). */
  protected computeNote(_runner: R, threads: { threads: number; reason: string }): string {
    return `${threads.threads} CPU thread${threads.threads === 1 ? "" : "s"} (${threads.reason})`;
  }

  // ---------------------------------------------------------------------------------------------
  // Models

  /**
   * Why this engine cannot serve `file` (a GGUF engine and a checkpoint, or the reverse; an
   * embedding model where it computes no embeddings: such a model writes no completions either),
   * else undefined.
   */
  unsupported(file: ModelFile): string | undefined {
    const format = formatRefusal(file, this.backend, this.modelFormat);
    if (format !== undefined || file.embedding === undefined || this.embeds(file)) return format;
    return `${file.id} is an embedding model and the ${this.backend} engine computes no embeddings: serve it with --engine llama (or auto)`;
  }

  async load(file: ModelFile): Promise<void> {
    this.ensureOpen();
    if (!file || typeof file.id !== "string" || file.id === "" || typeof file.path !== "string") {
      throw new EngineError("invalid_request", "a model file needs an id and a path", 400);
    }
    const refusal = this.unsupported(file);
    if (refusal) throw new EngineError("model_load_failed", refusal, 400);
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

  /** The thread count a loaded model evaluates with (what "auto" chose for it); undefined when not loaded. */
  threadsFor(modelId: string): number | undefined {
    return this.runners.get(modelId)?.threads;
  }

  /** The per-request context limit (prompt + max_tokens) of a loaded model; undefined when not loaded. */
  contextLimit(modelId: string): number | undefined {
    return this.runners.get(modelId)?.maxContext;
  }

  protected ensureOpen(): void {
    if (this.closed) throw new EngineError("engine_failed", "the engine is closed", 503);
  }

  /** The one node-llama-cpp instance; a failed attempt is forgotten so the next load tries again. */
  protected async getLlama(): Promise<Llama> {
    const { gpu, maxThreads, vocabularyOnly } = await this.llamaSetup();
    this.llama ??= getLlama({
      gpu,
      build: "never",
      skipDownload: true,
      maxThreads,
      logLevel: LlamaLogLevel.warn,
      logger: (level, message) => {
        const text = message.trimEnd();
        if (text === "") return;
        if (vocabularyOnly) this.log("debug", text);
        else if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) this.log("error", text);
        else if (level === LlamaLogLevel.warn) this.log("warn", text);
        else this.log("debug", text);
      },
    }).catch((err: unknown) => {
      this.llama = undefined;
      throw err;
    });
    return this.llama;
  }

  /** The model's runner, loading it (once, however many ask meanwhile) when it is not loaded. */
  protected ensureRunner(modelId: string): Promise<R> {
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

  /**
   * Vets the file (a crash of llama.cpp on it must happen in a child), loads it and registers its
   * runner; the idle timer starts at once.
   */
  private async createRunner(file: ModelFile): Promise<R> {
    if (this.validator) {
      const verdict = await this.validator.validate(file.path, file.sha256);
      if (!verdict.ok) throw loadFailure(file, verdict.reason ?? "it failed validation");
    }
    let llama: Llama;
    try {
      llama = await this.getLlama();
    } catch (err) {
      throw new EngineError(
        "engine_failed",
        `${this.runtimeName} is not available: ${errorMessage(err)}`,
        500,
        { cause: err },
      );
    }
    this.ensureOpen();
    const threads = await this.threads.forModel(file.sizeBytes);
    const runner = await this.openRunner(
      llama,
      file,
      threads.threads,
      () => !this.closed && this.known.get(file.id) === file,
    );
    this.runners.set(file.id, runner);
    this.log(
      "info",
      `loaded ${file.id}: ${this.rowCount(runner)} rows x ${runner.maxContext} tokens, ` +
        this.computeNote(runner, threads),
    );
    this.scheduleIdle(runner);
    return runner;
  }

  /** Ends a model's jobs (failing them with `reason`, else cancelling them) and frees it. */
  protected async dropRunner(modelId: string, reason?: () => EngineError): Promise<void> {
    const loading = this.loading.get(modelId);
    if (loading) await loading.catch(() => {});
    const runner = this.runners.get(modelId);
    if (!runner) return;
    // Awaited only when the engine has something to wait for, so no extra turn passes otherwise.
    const ended = this.endJobs(runner, reason);
    if (ended) await ended;
    await this.disposeRunner(runner);
  }

  private async disposeRunner(runner: R): Promise<void> {
    if (runner.disposed) return;
    this.disposing(runner);
    runner.disposed = true;
    clearTimeout(runner.idleTimer);
    if (this.runners.get(runner.file.id) === runner) this.runners.delete(runner.file.id);
    await runner.free();
    this.log("info", `unloaded ${runner.file.id}`);
  }

  /** (Re)starts an idle runner's timer; a request waiting for the model keeps it loaded. */
  protected scheduleIdle(runner: R): void {
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

  /** An embedding model generates nothing here, so it enforces no grammar either. */
  constrains(model: ModelFile): boolean {
    return this.enforcesGrammar && model.embedding === undefined;
  }

  /** Whether it reports `model`'s log-probabilities: an embedding model generates nothing here. */
  logprobs(model: ModelFile): boolean {
    return this.reportsLogprobs && model.embedding === undefined;
  }

  /** Whether it computes `model`'s embeddings: only the llama engine does (it overrides this). */
  embeds(_model: ModelFile): boolean {
    return false;
  }

  generate(request: GenerationRequest, onToken: (event: TokenEvent) => void): Generation {
    const job = this.createJob(request, onToken);
    try {
      job.seed = validateRequest(request);
      if (request.sampling.grammar !== undefined && !this.enforcesGrammar) {
        throw invalid(`the ${this.backend} engine cannot constrain output to a grammar (response_format)`);
      }
      if (request.sampling.tools !== undefined && !this.enforcesGrammar) {
        throw invalid(`the ${this.backend} engine cannot constrain output to a grammar (tools)`);
      }
      if (request.sampling.logprobs !== undefined && !this.reportsLogprobs) {
        throw invalid(`the ${this.backend} engine does not report log-probabilities (logprobs)`);
      }
      if (typeof onToken !== "function") throw invalid("onToken must be a function");
      this.ensureOpen();
      const model = this.known.get(request.model);
      if (!model) throw new EngineError("model_not_found", `model ${request.model} is not served here`, 404);
      // Its token states are trained to be pooled, not to predict text: served on /v1/embeddings only.
      if (model.embedding !== undefined) {
        throw invalid(
          `model ${request.model} is an embedding model: it serves /v1/embeddings, not completions`,
        );
      }
    } catch (err) {
      this.meters.failJob(job, err);
      return job;
    }
    this.preparing.add(job);
    void this.prepare(job);
    return job;
  }

  private async prepare(job: J): Promise<void> {
    try {
      // Rendering and tokenizing the prompt is synchronous work of a millisecond or more: let the
      // caller's acknowledgement of the request (and other I/O) go out first.
      await new Promise((resolve) => setImmediate(resolve));
      let runner = await this.ensureRunner(job.request.model);
      // Idle-unloaded between the load and this turn: load it again.
      if (runner.disposed) runner = await this.ensureRunner(job.request.model);
      if (job.settled) return;
      job.useTools(job.request.sampling.tools && runner.tokenizer.toolSyntax);
      const prompt = runner.tokenizer.render(job.request.input);
      if (prompt.tokens.length === 0) throw invalid("the prompt is empty");
      const max = job.request.sampling.maxTokens;
      if (prompt.tokens.length + max > runner.maxContext)
        throw contextLengthExceeded(runner.maxContext, prompt.tokens.length, max);
      job.prompt = prompt;
      job.promptTokens = prompt.tokens.length;
      if (prompt.stopStrings.length > 0)
        job.stop = new StopMatcher([...job.request.sampling.stop, ...prompt.stopStrings]);
      this.submit(job, runner, prompt);
    } catch (err) {
      this.meters.failJob(job, err);
    } finally {
      this.preparing.delete(job);
    }
  }

  // ---------------------------------------------------------------------------------------------

  /** What one runner holds now, for stats(): the engine knows how its rows and cells are kept. */
  protected abstract runnerLoad(runner: R): RunnerLoad;

  /** The stats both engines report: every runner's load summed, with the meters' counters and rates. */
  stats(): ModelHostStats {
    let busySlots = 0;
    let totalSlots = 0;
    let queueDepth = this.preparing.size;
    let usedCells = 0;
    let totalCells = 0;
    for (const runner of this.runners.values()) {
      const load = this.runnerLoad(runner);
      busySlots += load.busyRows;
      totalSlots += load.rows;
      queueDepth += load.queued;
      usedCells += load.usedCells;
      totalCells += load.totalCells;
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
