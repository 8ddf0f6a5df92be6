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
import type { RenderedPrompt } from "@darkbloom/models";
import { llamaErrorCode } from "@darkbloom/native/llama";
import type { Llama } from "node-llama-cpp";
import type { EngineDevice, EngineError, GenerationRequest, ModelFile, TokenEvent } from "../engine.js";
import type { LlamaEngineOptions } from "../llama/llama-engine.js";
import { errorMessage } from "../meters.js";
import { type LlamaSetup, ModelHostEngine, type ModelHostStats, type RunnerLoad } from "../model-host.js";
import { IncrementalDetokenizer } from "../text.js";
import { NativeJob, type NativeJobHost, nativeEngineError } from "./native-job.js";
import { type NativeRunner, openNativeRunner } from "./native-runner.js";

/** The llama engine's options; `gpu` is optional and ignored (the addon computes on the CPU). */
export type NativeEngineOptions = Omit<LlamaEngineOptions, "gpu"> & { gpu?: LlamaEngineOptions["gpu"] };

/** The llama engine's stats, measured by the native schedulers. */
export type NativeEngineStats = ModelHostStats;

/**
 * Models are handled as by the llama engine (model-host.ts: load vets and loads at once, unload
 * forgets, idle unload frees and the next request reloads); here is the scheduler's side: submitting,
 * cancelling and settling jobs, and its stats.
 */
export class NativeEngine extends ModelHostEngine<NativeRunner, NativeJob> {
  readonly backend = "native-llama";
  protected readonly runtimeName = "node-llama-cpp";
  private readonly runnerOf = new Map<NativeJob, NativeRunner>();
  private nextId = 0;
  private readonly host: NativeJobHost = {
    cancel: (job) => this.runnerOf.get(job)?.scheduler.cancel(job.schedulerId),
    settled: (job, outcome) => this.onSettled(job, outcome),
    tokenGenerated: () => {
      this.meters.counters.tokensGenerated++;
    },
  };

  constructor(options: NativeEngineOptions) {
    super(options, {
      maxBatchLimit: { rows: 256, message: "maxBatch must be at most 256 on the native engine" },
    });
  }

  /** The addon is built for the CPU only. */
  async device(): Promise<EngineDevice> {
    return { accelerator: "cpu", gpus: [] };
  }

  // ---------------------------------------------------------------------------------------------
  // Models

  /** node-llama-cpp for the tokenizers only: no GPU, one thread, its prebuilt binary. */
  protected async llamaSetup(): Promise<LlamaSetup> {
    return { gpu: false, maxThreads: 1 };
  }

  protected openRunner(
    llama: Llama,
    file: ModelFile,
    threads: number,
    stillWanted: () => boolean,
  ): Promise<NativeRunner> {
    return openNativeRunner(llama, file, { ...this.settings, threads }, this.log, stillWanted);
  }

  protected rowCount(runner: NativeRunner): number {
    return runner.rows;
  }

  /** Fails (and forgets) or cancels the jobs at once: closing the scheduler then ends what still runs. */
  protected endJobs(runner: NativeRunner, reason: (() => EngineError) | undefined): undefined {
    for (const job of [...runner.jobs]) {
      if (reason) {
        this.meters.failJob(job, reason());
        this.forget(job);
      } else job.cancel();
    }
    return undefined;
  }

  /** Folds the scheduler's last counters into the meters before it is closed. */
  protected override disposing(runner: NativeRunner): void {
    runner.sample(this.meters);
  }

  // ---------------------------------------------------------------------------------------------
  // Generation

  protected createJob(request: GenerationRequest, onToken: (event: TokenEvent) => void): NativeJob {
    return new NativeJob(request, onToken, this.host);
  }

  protected submit(job: NativeJob, runner: NativeRunner, prompt: RenderedPrompt): void {
    job.tokenizer = runner.tokenizer;
    job.detokenizer = new IncrementalDetokenizer(runner.tokenizer.model);
    job.schedulerId = `${++this.nextId}`;
    try {
      // Throws busy past rows + queueDepth, as the llama engine's admission does.
      runner.scheduler.submit(
        {
          id: job.schedulerId,
          prompt: Int32Array.from(prompt.tokens),
          maxTokens: job.request.sampling.maxTokens,
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

  protected runnerLoad(runner: NativeRunner): RunnerLoad {
    runner.sample(this.meters);
    const s = runner.schedulerStats();
    if (!s) return { rows: runner.rows, busyRows: 0, queued: 0, usedCells: 0, totalCells: 0 };
    // A row whose request settled here (cancelled, stopped) is freed at the scheduler's next step:
    // count only rows and queue places of requests still unsettled.
    const busyRows = Math.min(s.busyRows, runner.jobs.size);
    const queued = Math.min(s.queued, runner.jobs.size - busyRows);
    return { rows: runner.rows, busyRows, queued, usedCells: s.kvCellsUsed, totalCells: s.kvCells };
  }
}
