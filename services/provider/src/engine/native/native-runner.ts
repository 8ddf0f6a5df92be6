/**
 * A model loaded by the native engine: the addon's model and one scheduler over it (`rows` batch
 * rows of `maxContext` KV cells each, its own engine thread), the vocabulary-only node-llama-cpp copy
 * of the file that renders prompts and counts and detokenizes text (@darkbloom/models'
 * ModelTokenizer, what the coordinator counts with), and the jobs submitted to it.
 */
import { ModelTokenizer } from "@darkbloom/models";
import {
  type KvType,
  llamaErrorCode,
  NativeLlamaModel,
  type NativeLlamaScheduler,
  type SchedulerStats,
} from "@darkbloom/native/llama";
import type { Llama } from "node-llama-cpp";
import { EngineError, type ModelFile } from "../engine.js";
import { fitContext } from "../llama/memory-estimate.js";
import { loadFailure } from "../llama/model-runner.js";
import { type EngineMeters, errorMessage } from "../meters.js";
import type { NativeJob } from "./native-job.js";

export type EngineLog = (level: "debug" | "info" | "warn" | "error", message: string) => void;

/** How every model's scheduler is made. */
export interface NativeRunnerSettings {
  maxBatch: number;
  maxContext: number;
  threads: number;
  kvBits: 4 | 8 | undefined;
  prefillChunk: number;
  queueDepth: number;
  memoryBudgetBytes: number | undefined;
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
/** How often the scheduler's counters are folded into the engine's meters while it streams. */
const SAMPLE_MS = 100;

export class NativeRunner {
  readonly jobs = new Set<NativeJob>();
  idleTimer: NodeJS.Timeout | undefined;
  disposed = false;
  /** The scheduler's counters when last folded into the meters (they restart with each scheduler). */
  private last: SchedulerStats = ZERO;
  private lastSampleAt = 0;

  constructor(
    readonly file: ModelFile,
    readonly model: NativeLlamaModel,
    readonly scheduler: NativeLlamaScheduler,
    readonly tokenizer: ModelTokenizer,
    readonly rows: number,
    /** The per-row token limit the gate enforces. */
    readonly maxContext: number,
    readonly threads: number,
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

/**
 * Loads a (vetted) model file: its vocabulary for the tokenizer, its weights into the addon, and a
 * scheduler whose rows hold min(maxContext, the trained context) tokens, lowered to fit the memory
 * budget by node-llama-cpp's estimate of the same context (memory-estimate.ts; the addon's context
 * is shaped as the llama engine's: non-unified KV cache, flash attention only when quantized, a
 * batch of max(prefillChunk, rows)). `stillWanted` is asked once everything is allocated, as in the
 * llama engine: a model unloaded (or an engine closed) meanwhile is freed and reported not found.
 */
export async function openNativeRunner(
  llama: Llama,
  file: ModelFile,
  settings: NativeRunnerSettings,
  log: EngineLog,
  stillWanted: () => boolean,
): Promise<NativeRunner> {
  let tokenizer: ModelTokenizer | undefined;
  let model: NativeLlamaModel | undefined;
  let scheduler: NativeLlamaScheduler | undefined;
  try {
    tokenizer = await ModelTokenizer.open(llama, file.path);
    model = await NativeLlamaModel.load(file.path, { gpuLayers: 0 });
    const info = model.info();
    const wanted = info.nCtxTrain > 0 ? Math.min(settings.maxContext, info.nCtxTrain) : settings.maxContext;
    const batchSize = Math.max(settings.prefillChunk, settings.maxBatch);
    const maxContext = await fitContext(
      tokenizer.model.fileInsights,
      info.sizeBytes,
      0,
      wanted,
      batchSize,
      settings,
      log,
    );
    const kvType: KvType = settings.kvBits === 8 ? "q8_0" : settings.kvBits === 4 ? "q4_0" : "f16";
    scheduler = await model.createScheduler({
      rows: settings.maxBatch,
      contextPerRow: maxContext,
      threads: settings.threads,
      kvType,
      prefillChunk: settings.prefillChunk,
      queueDepth: settings.queueDepth,
    });
    const runner = new NativeRunner(
      file,
      model,
      scheduler,
      tokenizer,
      settings.maxBatch,
      maxContext,
      settings.threads,
    );
    if (!stillWanted()) {
      await runner.free();
      throw new EngineError("model_not_found", `model ${file.id} was unloaded while loading`, 404);
    }
    return runner;
  } catch (err) {
    if (err instanceof EngineError) throw err;
    await scheduler?.close().catch(() => {});
    await model?.close().catch(() => {});
    await tokenizer?.dispose().catch(() => {});
    if (llamaErrorCode(err) === "llama_not_built")
      throw new EngineError("engine_failed", errorMessage(err), 500, { cause: err });
    throw loadFailure(file, errorMessage(err), err);
  }
}
