/**
 * The baseline: node-llama-cpp used directly on the model file, with none of the engine's scheduling.
 * Each batch size gets its own context with `sequences = batch`; the rows' `sequence.evaluate` loops
 * run concurrently and node-llama-cpp batches whatever they queue in the same tick into one decode.
 */
import {
  getLlama,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  LlamaLogLevel,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import type { BenchTokenizer } from "./prompts.js";
import type { RowTiming } from "./stats.js";
import { type BenchRow, type BenchTarget, now } from "./target.js";

export interface DirectTargetOptions {
  /** CPU threads for evaluation (the engine's `threads`). */
  threads: number;
  /** Tokens per sequence (the engine's effective `maxContext`; capped at the model's trained context). */
  contextSize: number;
  /** llama_decode batch size (the engine uses its prefill chunk, 256). */
  batchSize?: number;
  name?: string;
  /** llama.cpp warnings and errors (default: dropped). */
  onLog?: (message: string) => void;
}

export interface DirectTarget extends BenchTarget {
  /** The model's tokenizer, counted as the engine counts a raw-text prompt. */
  readonly tokenizer: BenchTokenizer;
  /** The context size actually used. */
  readonly contextSize: number;
  /**
   * The model's end-of-generation tokens: a row that samples one ends there (here and on an engine;
   * llama-batched-bench decodes every row to its full length). An engine target's sampling can ban
   * them (engineTarget's `sampling`), so that its rounds are as long as the limit's.
   */
  readonly endOfGeneration: readonly number[];
}

interface BatchContext {
  context: LlamaContext;
  sequences: LlamaContextSequence[];
}

/** Loads the model on the CPU (prebuilt binaries only) and returns the direct target. */
export async function openDirectTarget(
  modelPath: string,
  options: DirectTargetOptions,
): Promise<DirectTarget> {
  const llama: Llama = await getLlama({
    gpu: false,
    build: "never",
    skipDownload: true,
    maxThreads: options.threads,
    logLevel: LlamaLogLevel.warn,
    logger: (_level, message) => {
      const text = message.trimEnd();
      if (text !== "") options.onLog?.(text);
    },
  });
  let model: LlamaModel;
  try {
    model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  } catch (err) {
    await llama.dispose();
    throw err;
  }
  const train = model.trainContextSize;
  const contextSize = train > 0 ? Math.min(options.contextSize, train) : options.contextSize;
  const batchSize = options.batchSize ?? 256;
  const contexts = new Map<number, BatchContext>();
  const addBos = model.tokens.bos != null && model.tokens.shouldPrependBosToken;
  const vocabulary = model.fileInfo.metadata.tokenizer?.ggml?.tokens?.length ?? 0;
  const endOfGeneration: number[] = [];
  for (let token = 0; token < vocabulary; token++)
    if (model.isEogToken(token as Token)) endOfGeneration.push(token);

  /** Raw text as the engine tokenizes it (no special-token parsing; BOS first when the model wants one). */
  const promptTokens = (text: string): Token[] => {
    const tokens = model.tokenize(text, false);
    const bos = model.tokens.bos;
    if (addBos && bos != null && tokens[0] !== bos) tokens.unshift(bos);
    return tokens;
  };

  const contextFor = async (batch: number): Promise<BatchContext> => {
    let entry = contexts.get(batch);
    if (!entry) {
      const context = await model.createContext({
        sequences: batch,
        contextSize,
        batchSize: Math.max(batchSize, batch),
        threads: options.threads,
        flashAttention: false,
        failedCreationRemedy: false,
      });
      const sequences = Array.from({ length: batch }, () => context.getSequence());
      entry = { context, sequences };
      contexts.set(batch, entry);
    }
    return entry;
  };

  const runRow = async (
    sequence: LlamaContextSequence,
    { prompt, genTokens, startAfter, onToken }: BenchRow,
  ): Promise<RowTiming> => {
    await startAfter;
    const startMs = now();
    const tokens = promptTokens(prompt);
    let completionTokens = 0;
    let firstTokenMs: number | undefined;
    let lastTokenMs: number | undefined;
    let finishReason = "stop";
    const tokenTimesMs: number[] = [];
    for await (const _token of sequence.evaluate(tokens, { temperature: 0 })) {
      const at = now();
      firstTokenMs ??= at;
      lastTokenMs = at;
      tokenTimesMs.push(at);
      onToken?.(at, 1);
      if (++completionTokens >= genTokens) {
        finishReason = "length";
        break;
      }
    }
    return {
      promptTokens: tokens.length,
      completionTokens,
      startMs,
      firstTokenMs,
      lastTokenMs,
      finishReason,
      tokenTimesMs,
    };
  };

  return {
    name: options.name ?? "direct",
    contextSize,
    endOfGeneration,
    tokenizer: {
      tokenize: (text) => model.tokenize(text, false),
      detokenize: (tokens) => model.detokenize(tokens as Token[]),
      addedTokens: addBos ? 1 : 0,
    },
    async runRows(rows) {
      const { sequences } = await contextFor(rows.length);
      try {
        return await Promise.all(rows.map((row, i) => runRow(sequences[i]!, row)));
      } finally {
        for (const sequence of sequences) await sequence.clearHistory();
      }
    },
    async close() {
      for (const { context } of contexts.values()) await context.dispose().catch(() => {});
      contexts.clear();
      await model.dispose().catch(() => {});
      await llama.dispose().catch(() => {});
    },
  };
}
