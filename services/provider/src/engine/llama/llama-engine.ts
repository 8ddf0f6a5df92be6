/**
 * The `llama` engine: llama.cpp through node-llama-cpp, with continuous batching. Its parts:
 * - model-runner.ts: a loaded model, its context and batch rows, sized to the memory budget;
 * - step-loop.ts: the per-model loop that batches every row's decode into one llama_decode and
 *   interleaves prompt chunks, and why its output does not depend on what else runs;
 * - job.ts: one generation's own state (prompt, sampling, detokenizer, stop strings);
 * - embedding-runner.ts: an embedding model's embeddings (its own context, made on first use);
 * - meters.ts: the counters and rates stats() reports.
 * - ../model-host.ts: the models (load, unload, idle unload), request validation, the context gate
 *   and the engine's lifecycle, shared with the native engine.
 * This class adds admission (the queue bound) and hands jobs to the step loop.
 *
 * Untrusted model files are vetted in a child process before the daemon loads them (ModelValidator).
 */
import { embeddingModelOf, MAX_EMBEDDING_INPUT_TOKENS } from "@darkbloom/models/embeddings";
import { type Llama, LlamaGrammar, LlamaGrammarEvaluationState } from "node-llama-cpp";
import {
  type EmbeddingEvent,
  type EmbeddingJob,
  type EmbeddingRequest,
  type EngineDevice,
  EngineError,
  type GenerationRequest,
  type ModelFile,
  type TokenEvent,
} from "../engine.js";
import {
  type LlamaSetup,
  ModelHostEngine,
  type ModelHostOptions,
  type ModelHostStats,
  type RunnerLoad,
} from "../model-host.js";
import { EmbeddingRunner, EmbeddingTask, validateEmbeddingRequest } from "./embedding-runner.js";
import { invalid, Job } from "./job.js";
import { type ModelRunner, openModelRunner } from "./model-runner.js";
import { StepLoop } from "./step-loop.js";

export interface LlamaEngineOptions extends ModelHostOptions {
  gpu: false | "auto";
}

export type LlamaEngineStats = ModelHostStats;

/** Models, their lifecycle and the prompt's gate are ModelHostEngine's; admission and batching are here. */
export class LlamaEngine extends ModelHostEngine<ModelRunner, Job> {
  readonly backend = "llama";
  protected readonly enforcesGrammar = true;
  protected readonly runtimeName = "llama.cpp";
  private readonly gpu: false | "auto";
  private readonly loop: StepLoop;
  /** Embeddings requests accepted but not yet admitted (waiting for the model). */
  private readonly preparingEmbeddings = new Set<EmbeddingTask>();

  constructor(options: LlamaEngineOptions) {
    super(options, {
      more: () => {
        if (options.gpu !== false && options.gpu !== "auto") throw new Error('gpu must be false or "auto"');
      },
    });
    this.gpu = options.gpu;
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

  protected async llamaSetup(): Promise<LlamaSetup> {
    // The instance's thread limit is what all its contexts share when several models decode at once:
    // the explicit count, or for "auto" the cores the choices are capped at.
    return { gpu: this.gpu === false ? false : "auto", maxThreads: await this.threads.maxThreads() };
  }

  protected async openRunner(
    llama: Llama,
    file: ModelFile,
    threads: number,
    stillWanted: () => boolean,
  ): Promise<ModelRunner> {
    const settings = { ...this.settings, gpu: this.gpu, threads };
    const runner = await openModelRunner(llama, file, settings, this.log, stillWanted);
    // What the file itself declares, whatever the inventory said.
    const embedding = embeddingModelOf(runner.model.fileInfo);
    if (embedding) {
      runner.embedder = new EmbeddingRunner({
        file,
        model: runner.model,
        embedding,
        contextSize: Math.min(runner.maxContext, MAX_EMBEDDING_INPUT_TOKENS),
        threads,
        maxJobs: this.settings.maxBatch + this.settings.queueDepth,
        meters: this.meters,
        onIdle: () => this.scheduleIdle(runner),
      });
    }
    return runner;
  }

  /** An embedding model's limit is its embedding context's: the longest input it embeds, plus its end. */
  override contextLimit(modelId: string): number | undefined {
    const runner = this.runners.get(modelId);
    return runner?.embedder
      ? Math.min(runner.maxContext, MAX_EMBEDDING_INPUT_TOKENS)
      : super.contextLimit(modelId);
  }

  /**
   * An embedding GGUF: the loaded file's pooling type when it is loaded, else what the inventory
   * read from its header.
   */
  override embeds(model: ModelFile): boolean {
    if ((model.format ?? "gguf") !== "gguf") return false;
    const runner = this.runners.get(model.id);
    if (runner && !runner.disposed && runner.file.path === model.path && runner.file.sha256 === model.sha256)
      return runner.embedder !== undefined;
    return model.embedding !== undefined;
  }

  protected rowCount(): number {
    return this.settings.maxBatch;
  }

  /**
   * Fails or cancels the queued and running jobs (generations and embeddings), then waits for the
   * model's step loop and embeddings to stop.
   */
  protected async endJobs(runner: ModelRunner, reason: (() => EngineError) | undefined): Promise<void> {
    for (const job of [...runner.queue, ...runner.active]) {
      if (job.settled) continue;
      if (reason) this.meters.failJob(job, reason());
      else {
        job.finish("cancelled");
        this.meters.counters.requestsCancelled++;
      }
    }
    runner.queue.length = 0;
    await Promise.all([runner.loopDone, runner.embedder?.end(reason)]);
  }

  // ---------------------------------------------------------------------------------------------
  // Generation

  protected createJob(request: GenerationRequest, onToken: (event: TokenEvent) => void): Job {
    return new Job(request, onToken, (j) => this.onCancel(j));
  }

  /** Admission: at most rows + queueDepth jobs per model, then "engine_busy". */
  protected submit(job: Job, runner: ModelRunner): void {
    if (runner.active.size + runner.queue.length >= runner.rows.length + this.settings.queueDepth) {
      throw new EngineError(
        "engine_busy",
        `all ${runner.rows.length} rows are busy and ${runner.queue.length} requests are waiting`,
        503,
      );
    }
    const grammar = job.grammar;
    if (grammar !== undefined) {
      // Parsed here, once per job: a grammar llama.cpp cannot parse fails the request, not the loop.
      let parsed: LlamaGrammar;
      try {
        parsed = new LlamaGrammar(runner.model.llama, { grammar });
      } catch (e) {
        throw invalid(`the grammar does not parse (${e instanceof Error ? e.message : String(e)})`);
      }
      job.grammarState = new LlamaGrammarEvaluationState({ model: runner.model, grammar: parsed });
    }
    job.tokenBias = runner.tokenBias(job.request.sampling, grammar !== undefined);
    job.phase = "queued";
    runner.queue.push(job);
    this.loop.kick(runner);
  }

  // ---------------------------------------------------------------------------------------------
  // Embeddings

  /**
   * Embeds a request's inputs on an embedding model: checked against the model once it is loaded
   * (an embedding model, its dimensions, each input within the context), then queued for its
   * embedding context (embedding-runner.ts). Failures settle `done`, never throw.
   */
  embed(request: EmbeddingRequest, onEmbedding?: (event: EmbeddingEvent) => void): EmbeddingJob {
    const task = new EmbeddingTask(request, this.meters, (t) => this.onEmbeddingCancel(t), onEmbedding);
    try {
      validateEmbeddingRequest(request);
      this.ensureOpen();
      if (!this.known.has(request.model)) {
        throw new EngineError("model_not_found", `model ${request.model} is not served here`, 404);
      }
    } catch (err) {
      task.fail(err);
      return task;
    }
    this.preparingEmbeddings.add(task);
    void this.prepareEmbedding(task);
    return task;
  }

  private async prepareEmbedding(task: EmbeddingTask): Promise<void> {
    try {
      // Tokenizing every input is synchronous work: let the request's acknowledgement go out first.
      await new Promise((resolve) => setImmediate(resolve));
      let runner = await this.ensureRunner(task.request.model);
      if (runner.disposed) runner = await this.ensureRunner(task.request.model);
      if (task.settled) return;
      if (!runner.embedder) {
        throw invalid(
          `model ${task.request.model} is not an embedding model (its GGUF declares no pooling): it computes no embeddings`,
        );
      }
      runner.embedder.admit(task, (input) => runner.tokenizer.render(input).tokens);
    } catch (err) {
      task.fail(err);
    } finally {
      this.preparingEmbeddings.delete(task);
    }
  }

  private onEmbeddingCancel(task: EmbeddingTask): void {
    this.preparingEmbeddings.delete(task);
    this.runners.get(task.request.model)?.embedder?.forget(task);
  }

  override async close(): Promise<void> {
    for (const task of [...this.preparingEmbeddings]) task.cancel();
    await super.close();
  }

  // ---------------------------------------------------------------------------------------------

  private onCancel(job: Job): void {
    this.meters.counters.requestsCancelled++;
    this.preparing.delete(job);
    const runner = this.runners.get(job.request.model);
    if (!runner) return;
    const i = runner.queue.indexOf(job);
    if (i >= 0) runner.queue.splice(i, 1);
  }

  // ---------------------------------------------------------------------------------------------

  protected runnerLoad(runner: ModelRunner): RunnerLoad {
    const cells = runner.cells();
    return {
      rows: runner.rows.length,
      busyRows: runner.busyRows,
      queued: runner.queue.length + (runner.embedder?.waiting ?? 0),
      usedCells: cells.used,
      totalCells: cells.total,
    };
  }
}
