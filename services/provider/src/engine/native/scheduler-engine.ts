/**
 * An engine over one of the project's native batching cores: the native-llama engine (llama.cpp,
 * native-engine.ts) and the mlx engine (MLX checkpoints, ../mlx/mlx-engine.ts) differ only in how a
 * model is opened and what it computes on. Models are handled by ModelHostEngine (load vets and loads
 * at once, unload forgets, idle unload frees and the next request reloads); here is the scheduler's
 * side both share: submitting, cancelling and settling jobs (NativeJob), and the stats.
 */
import type { RenderedPrompt } from "@darkbloom/models";
import { EngineError, type GenerationRequest, type TokenEvent } from "../engine.js";
import { errorMessage } from "../meters.js";
import { ModelHostEngine, type ModelHostOptions, type OptionChecks, type RunnerLoad } from "../model-host.js";
import { IncrementalDetokenizer } from "../text.js";
import { NativeJob, type NativeJobHost, nativeEngineError } from "./native-job.js";
import type { SchedulerRunner } from "./scheduler-runner.js";

export abstract class SchedulerEngine<R extends SchedulerRunner> extends ModelHostEngine<R, NativeJob> {
  private readonly runnerOf = new Map<NativeJob, R>();
  private nextId = 0;
  private readonly host: NativeJobHost = {
    cancel: (job) => this.runnerOf.get(job)?.scheduler.cancel(job.schedulerId),
    settled: (job, outcome) => this.onSettled(job, outcome),
    tokenGenerated: () => {
      this.meters.counters.tokensGenerated++;
    },
  };

  protected constructor(options: ModelHostOptions, checks: OptionChecks) {
    super(options, checks);
  }

  /** The stable code of an error the core threw (its `code`), e.g. "busy". */
  protected abstract errorCode(err: unknown): string | undefined;

  protected rowCount(runner: R): number {
    return runner.rows;
  }

  /** Fails (and forgets) or cancels the jobs at once: closing the scheduler then ends what still runs. */
  protected endJobs(runner: R, reason: (() => EngineError) | undefined): undefined {
    for (const job of [...runner.jobs]) {
      if (reason) {
        this.meters.failJob(job, reason());
        this.forget(job);
      } else job.cancel();
    }
    return undefined;
  }

  /** Folds the scheduler's last counters into the meters before it is closed. */
  protected override disposing(runner: R): void {
    runner.sample(this.meters);
  }

  // ---------------------------------------------------------------------------------------------
  // Generation

  protected createJob(request: GenerationRequest, onToken: (event: TokenEvent) => void): NativeJob {
    return new NativeJob(request, onToken, this.host);
  }

  protected submit(job: NativeJob, runner: R, prompt: RenderedPrompt): void {
    job.tokenizer = runner.tokenizer;
    job.detokenizer = new IncrementalDetokenizer(runner.tokenizer.model);
    if (job.request.sampling.logprobs !== undefined) {
      // Entries show each token's bytes: a vocabulary the port cannot read has none to show.
      if (!runner.piece) {
        throw new EngineError(
          "invalid_request",
          `model ${runner.file.id} cannot report log-probabilities: its vocabulary is not byte-level BPE`,
          400,
        );
      }
      job.piece = runner.piece;
    }
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
      throw nativeEngineError(this.errorCode(err), errorMessage(err), err);
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

  protected runnerLoad(runner: R): RunnerLoad {
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
