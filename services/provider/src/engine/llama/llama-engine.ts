/**
 * The `llama` engine: llama.cpp through node-llama-cpp, with continuous batching. Its parts:
 * - model-runner.ts: a loaded model, its context and batch rows, sized to the memory budget;
 * - step-loop.ts: the per-model loop that batches every row's decode into one llama_decode and
 *   interleaves prompt chunks, and why its output does not depend on what else runs;
 * - job.ts: one generation's own state (prompt, sampling, detokenizer, stop strings);
 * - meters.ts: the counters and rates stats() reports.
 * - ../model-host.ts: the models (load, unload, idle unload), request validation, the context gate
 *   and the engine's lifecycle, shared with the native engine.
 * This class adds admission (the queue bound) and hands jobs to the step loop.
 *
 * Untrusted model files are vetted in a child process before the daemon loads them (ModelValidator).
 */
import { type Llama, LlamaGrammar, LlamaGrammarEvaluationState } from "node-llama-cpp";
import {
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

  protected openRunner(
    llama: Llama,
    file: ModelFile,
    threads: number,
    stillWanted: () => boolean,
  ): Promise<ModelRunner> {
    return openModelRunner(llama, file, { ...this.settings, gpu: this.gpu, threads }, this.log, stillWanted);
  }

  protected rowCount(): number {
    return this.settings.maxBatch;
  }

  /** Fails or cancels the queued and running jobs, then waits for the model's step loop to stop. */
  protected endJobs(runner: ModelRunner, reason: (() => EngineError) | undefined): Promise<void> {
    for (const job of [...runner.queue, ...runner.active]) {
      if (job.settled) continue;
      if (reason) this.meters.failJob(job, reason());
      else {
        job.finish("cancelled");
        this.meters.counters.requestsCancelled++;
      }
    }
    runner.queue.length = 0;
    return runner.loopDone;
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
      queued: runner.queue.length,
      usedCells: cells.used,
      totalCells: cells.total,
    };
  }
}
