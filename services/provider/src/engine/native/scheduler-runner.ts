/**
 * A model loaded by an engine over one of the project's native batching cores (@darkbloom/native/llama
 * or @darkbloom/native/mlx, which share one scheduler contract): the core's model and one scheduler
 * over it (`rows` batch rows of `maxContext` KV cells each, its own engine thread), the
 * vocabulary-only node-llama-cpp copy of the model's vocabulary that renders prompts and counts and
 * detokenizes text (@darkbloom/models' ModelTokenizer, what the coordinator counts with), and the
 * jobs submitted to it.
 */
import type { ModelTokenizer } from "@darkbloom/models";
import type { GenerateRequest, SchedulerEvent, SchedulerStats } from "@darkbloom/native/llama";
import type { MlxSchedulerEvent } from "@darkbloom/native/mlx";
import { EngineError, type ModelFile } from "../engine.js";
import type { EngineMeters } from "../meters.js";
import type { NativeJob } from "./native-job.js";

/** A scheduler event of either core (their error codes differ; engine.ts maps both alike). */
export type CoreSchedulerEvent = SchedulerEvent | MlxSchedulerEvent;

/** What an engine needs of a core's scheduler (NativeLlamaScheduler and MlxScheduler both are one). */
export interface CoreScheduler {
  /** Throws busy, context_length_exceeded, bad_input or closed (an Error with `code`). */
  submit(request: GenerateRequest, onEvent: (event: CoreSchedulerEvent) => void): void;
  cancel(id: string): void;
  stats(): SchedulerStats;
  close(): Promise<void>;
}

const ZERO: SchedulerStats = {
  busyRows: 0,
  queued: 0,
  rows: 0,
  kvCellsUsed: 0,
  kvCells: 0,
  promptTokensProcessed: 0,
  prefillSeconds: 0,
  decodeSeconds: 0,
  decodeSteps: 0,
  tokensGenerated: 0,
};

/** How a scheduler core's rows are made (the native-llama and mlx engines' shared knobs). */
export interface SchedulerRunnerSettings {
  maxBatch: number;
  maxContext: number;
  threads: number;
  kvBits: 4 | 8 | undefined;
  prefillChunk: number;
  queueDepth: number;
  memoryBudgetBytes: number | undefined;
}

/** How often the scheduler's counters are folded into the engine's meters while it streams. */
const SAMPLE_MS = 100;

export class SchedulerRunner {
  readonly jobs = new Set<NativeJob>();
  idleTimer: NodeJS.Timeout | undefined;
  disposed = false;
  /** The scheduler's counters when last folded into the meters (they restart with each scheduler). */
  private last: SchedulerStats = ZERO;
  private lastSampleAt = 0;

  constructor(
    readonly file: ModelFile,
    /** The core's model (its weights): closed after the scheduler. */
    readonly model: { close(): Promise<void> },
    readonly scheduler: CoreScheduler,
    readonly tokenizer: ModelTokenizer,
    readonly rows: number,
    /** The per-row token limit the gate enforces. */
    readonly maxContext: number,
    readonly threads: number,
    /** A token's piece (its bytes, control tokens as nothing), where the core can say: logprobs. */
    readonly piece?: (token: number) => Uint8Array,
  ) {}

  get idle(): boolean {
    return this.jobs.size === 0;
  }

  /** The scheduler's stats, or undefined once it is closed. */
  schedulerStats(): SchedulerStats | undefined {
    if (this.disposed) return undefined;
    try {
      return this.scheduler.stats();
    } catch {
      return undefined;
    }
  }

  /**
   * Folds what the scheduler measured since the last call into the engine's meters (counters that
   * outlive this runner, rates as moving averages). `throttled`: at most every SAMPLE_MS.
   */
  sample(meters: EngineMeters, throttled = false): void {
    const now = performance.now();
    if (throttled && now - this.lastSampleAt < SAMPLE_MS) return;
    this.lastSampleAt = now;
    const stats = this.schedulerStats();
    if (!stats) return;
    const last = this.last;
    this.last = stats;
    const promptTokens = stats.promptTokensProcessed - last.promptTokensProcessed;
    if (promptTokens > 0) meters.prefillChunk(promptTokens, stats.prefillSeconds - last.prefillSeconds);
    meters.decodeSpan(
      stats.decodeSteps - last.decodeSteps,
      stats.decodeSeconds - last.decodeSeconds,
      stats.tokensGenerated - last.tokensGenerated,
    );
  }

  /** Closes the scheduler (its requests end "cancelled"), the model and the tokenizer; errors are ignored. */
  async free(): Promise<void> {
    await this.scheduler.close().catch(() => {});
    await this.model.close().catch(() => {});
    await this.tokenizer.dispose().catch(() => {});
  }
}

/** A runner's parts as an engine opens them, each recorded here as soon as it is open. */
export interface RunnerParts {
  tokenizer?: ModelTokenizer;
  model?: { close(): Promise<void> };
  scheduler?: CoreScheduler;
}

/** What opening a runner produced: every part, and the rows it was made with. */
export interface OpenedRunner {
  tokenizer: ModelTokenizer;
  model: { close(): Promise<void> };
  scheduler: CoreScheduler;
  rows: number;
  maxContext: number;
  threads: number;
  piece?: (token: number) => Uint8Array;
}

/**
 * Makes a runner from what `open` opens (recording each part in `held` as it goes). If opening fails,
 * every part opened so far is closed, and the error is thrown as it is when it is an EngineError (a
 * refusal, such as a model that does not fit), else as `failure` makes it. `stillWanted` is asked
 * once everything is allocated: a model unloaded (or an engine closed) meanwhile is freed and
 * reported not found.
 */
export async function assembleRunner(
  file: ModelFile,
  stillWanted: () => boolean,
  open: (held: RunnerParts) => Promise<OpenedRunner>,
  failure: (err: unknown) => EngineError,
): Promise<SchedulerRunner> {
  const held: RunnerParts = {};
  let opened: OpenedRunner;
  try {
    opened = await open(held);
  } catch (err) {
    await held.scheduler?.close().catch(() => {});
    await held.model?.close().catch(() => {});
    await held.tokenizer?.dispose().catch(() => {});
    throw err instanceof EngineError ? err : failure(err);
  }
  const { tokenizer, model, scheduler, rows, maxContext, threads, piece } = opened;
  const runner = new SchedulerRunner(file, model, scheduler, tokenizer, rows, maxContext, threads, piece);
  if (!stillWanted()) {
    await runner.free();
    throw new EngineError("model_not_found", `model ${file.id} was unloaded while loading`, 404);
  }
  return runner;
}

/**
 * A token's piece, each asked of `piece` once: entries ask for each sampled token and its
 * alternatives, and at most the vocabulary is ever kept.
 */
export function cachedPieces(piece: (token: number) => Uint8Array): (token: number) => Uint8Array {
  const pieces = new Map<number, Uint8Array>();
  return (token) => {
    let bytes = pieces.get(token);
    if (bytes === undefined) {
      bytes = piece(token);
      pieces.set(token, bytes);
    }
    return bytes;
  };
}
