/**
 * A loaded model and its batch rows. Each loaded model has one LlamaContext with
 * `sequences = maxBatch`; every sequence is a batch row with its own KV stream (node-llama-cpp 3.22
 * creates contexts with a non-unified KV cache, so a row owns `maxContext` cells). A generation takes
 * a free row or waits in the model's FIFO queue (at most `queueDepth` waiting, then "engine_busy").
 * A finished or cancelled row is retired at the next step boundary (step-loop.ts): its generator is
 * closed and its KV cells are cleared, and the next queued request takes it.
 */

import { ModelTokenizer } from "@darkbloom/models";
import { type Llama, type LlamaContext, type LlamaModel, type Token, TokenBias } from "node-llama-cpp";
import { EngineError, type ModelFile, type SamplingOptions } from "../engine.js";
import { errorMessage } from "../meters.js";
import { characterFragmentTokens } from "../text.js";
import type { EmbeddingRunner } from "./embedding-runner.js";
import type { Job, Row } from "./job.js";
import { fitContext, ggufMemoryNeed } from "./memory-estimate.js";

const invalidRequest = (message: string) => new EngineError("invalid_request", message, 400);

/** The engine's log: llama.cpp's lines and its own. */
export type EngineLog = (level: "debug" | "info" | "warn" | "error", message: string) => void;

/** How every model's context is made. */
export interface RunnerSettings {
  maxBatch: number;
  maxContext: number;
  threads: number;
  kvBits: 4 | 8 | undefined;
  prefillChunk: number;
  memoryBudgetBytes: number | undefined;
  gpu: false | "auto";
}

/** A loaded model: its context, rows, queue and step loop state. */
export class ModelRunner {
  readonly queue: Job[] = [];
  readonly active = new Set<Job>();
  loopRunning = false;
  loopDone: Promise<void> = Promise.resolve();
  idleTimer: NodeJS.Timeout | undefined;
  disposed = false;
  /** An embedding model's embeddings (set by the engine when the GGUF declares a pooling type). */
  embedder: EmbeddingRunner | undefined;

  constructor(
    readonly file: ModelFile,
    readonly model: LlamaModel,
    readonly context: LlamaContext,
    readonly rows: Row[],
    /** Renders prompts and counts the text each choice emits (what is billed). */
    readonly tokenizer: ModelTokenizer,
    /** The per-row token limit the gate enforces. */
    readonly maxContext: number,
    /** CPU threads its context evaluates with. */
    readonly threads: number,
  ) {}

  get busyRows(): number {
    let n = 0;
    for (const job of this.active) if (!job.settled) n++;
    return n;
  }

  get idle(): boolean {
    return (
      this.queue.length === 0 && this.active.size === 0 && !this.loopRunning && (this.embedder?.idle ?? true)
    );
  }

  /** KV cells in use by rows with a job, and all the context's cells (for kv_cache_usage). */
  cells(): { used: number; total: number } {
    let used = 0;
    for (const row of this.rows) {
      if (row.job && !row.sequence.disposed) used += row.sequence.nextTokenIndex;
    }
    return { used, total: this.context.contextSize * this.rows.length };
  }

  /**
   * The sampler biases of a request, or undefined for none: its logit_bias, and under a grammar the
   * vocabulary's character fragments banned (text.ts). Throws invalid_request for a token outside the
   * vocabulary, and for a bias on an end-of-generation token, which node-llama-cpp's TokenBias drops
   * without a word (the native core applies it).
   */
  tokenBias(sampling: SamplingOptions, grammar: boolean): TokenBias | undefined {
    const requested = sampling.logitBias ?? [];
    if (requested.length === 0 && !grammar) return undefined;
    const size = this.vocabularySize();
    const bias = new TokenBias(this.model.tokenizer);
    for (const [token, value] of requested) {
      if (token >= size) throw invalidRequest(`logit_bias names token ${token}; the vocabulary has ${size}`);
      if (this.model.isEogToken(token as Token)) {
        throw invalidRequest(`the llama engine cannot bias the end-of-generation token ${token}`);
      }
      bias.set(token as Token, value === Number.NEGATIVE_INFINITY ? "never" : { logit: value });
    }
    // Last, so that a request's bias never brings a fragment back under a grammar.
    if (grammar) for (const token of this.characterFragments()) bias.set(token as Token, "never");
    return bias;
  }

  private vocabularySize(): number {
    const tokens = this.model.fileInfo.metadata?.tokenizer?.ggml?.tokens;
    // Without the vocabulary's size neither biases nor fragments can be checked: refused.
    if (!Array.isArray(tokens) || tokens.length === 0) {
      throw invalidRequest("this model's vocabulary cannot be read for logit_bias or a grammar");
    }
    return tokens.length;
  }

  private characterFragments(): readonly number[] {
    this.#fragments ??= characterFragmentTokens(this.model, this.vocabularySize());
    return this.#fragments;
  }
  #fragments: number[] | undefined;

  /** Frees the contexts and the weights; errors are ignored (the runner is gone either way). */
  async free(): Promise<void> {
    await this.embedder?.dispose();
    await this.context.dispose().catch(() => {});
    await this.model.dispose().catch(() => {});
  }
}

/**
 * Loads a model file and makes its context and rows. `stillWanted` is asked once everything is
 * allocated: a model unloaded (or an engine closed) while it was loading is freed again and reported
 * as not found. Any other failure is model_load_failed, naming the file.
 */
export async function openModelRunner(
  llama: Llama,
  file: ModelFile,
  settings: RunnerSettings,
  log: EngineLog,
  stillWanted: () => boolean,
): Promise<ModelRunner> {
  let model: LlamaModel | undefined;
  let context: LlamaContext | undefined;
  try {
    model = await llama.loadModel({
      modelPath: file.path,
      gpuLayers: settings.gpu === false ? 0 : "auto",
    });
    const train = model.trainContextSize;
    const wanted = train > 0 ? Math.min(settings.maxContext, train) : settings.maxContext;
    const kvType = settings.kvBits === 8 ? "Q8_0" : settings.kvBits === 4 ? "Q4_0" : undefined;
    const batchSize = Math.max(settings.prefillChunk, settings.maxBatch);
    const maxContext = await fitContext(
      ggufMemoryNeed(model.fileInsights, model.size, model.gpuLayers, batchSize, settings),
      wanted,
      settings,
      log,
    );
    context = await model.createContext({
      sequences: settings.maxBatch,
      contextSize: maxContext,
      batchSize,
      threads: settings.threads,
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
    for (let i = 0; i < settings.maxBatch; i++)
      rows.push({ index: i, sequence: context.getSequence(), job: undefined });
    const runner = new ModelRunner(
      file,
      model,
      context,
      rows,
      ModelTokenizer.of(model, llama),
      maxContext,
      settings.threads,
    );
    if (!stillWanted()) {
      await context.dispose();
      await model.dispose();
      throw new EngineError("model_not_found", `model ${file.id} was unloaded while loading`, 404);
    }
    return runner;
  } catch (err) {
    if (err instanceof EngineError) throw err;
    await context?.dispose().catch(() => {});
    await model?.dispose().catch(() => {});
    throw loadFailure(file, errorMessage(err), err);
  }
}

/** model_load_failed for `file`, saying why. */
export function loadFailure(file: ModelFile, reason: string, cause?: unknown): EngineError {
  return new EngineError(
    "model_load_failed",
    `model ${file.id} (${file.path}) cannot be loaded: ${reason}`,
    500,
    {
      cause,
    },
  );
}
