/**
 * A checkpoint loaded by the mlx engine: the addon's model and one scheduler over it (a SchedulerRunner,
 * as the native-llama engine's), with the tokenizer of the checkpoint's converted vocabulary
 * (vocabulary.ts). The scheduler preallocates its whole KV cache (addon/mlx/engine.cc: `rows` rows of
 * contextPerRow plus a re-alignment slack, and one staging row for prefill), so the context per row is
 * fitted to the memory budget before it is made, with the same rule and warning as the GGUF engines
 * (fitContext), and a setting that does not fit even at the floor is refused rather than left to the
 * allocator (on the CPU an overcommitted allocation "succeeds" and the kernel kills the daemon later).
 */
import { describeVocabulary, vocabularyPieces } from "@darkbloom/models";
import { MlxModel, type MlxModelConfig, type MlxModelInfo, mlxErrorCode } from "@darkbloom/native/mlx";
import type { Llama } from "node-llama-cpp";
import { EngineError, type ModelFile } from "../engine.js";
import { fitContext } from "../llama/memory-estimate.js";
import { type EngineLog, loadFailure } from "../llama/model-runner.js";
import { errorMessage } from "../meters.js";
import {
  assembleRunner,
  cachedPieces,
  type SchedulerRunner,
  type SchedulerRunnerSettings,
} from "../native/scheduler-runner.js";
import { openCheckpointTokenizer, VocabularyError } from "./vocabulary.js";

/** A checkpoint of the mlx engine (its runner's model is an MlxModel). */
export type MlxRunner = SchedulerRunner;

export interface MlxRunnerSettings extends SchedulerRunnerSettings {
  /** Where converted vocabularies are kept (undefined: converted at each load). */
  vocabularyCacheDir: string | undefined;
}

/** Positions the addon keeps past contextPerRow in the batched cache (engine.cc's Slack). */
const slack = (contextPerRow: number) => Math.min(256, contextPerRow);

/**
 * Bytes of the KV caches a scheduler preallocates (what its stats call kvBytes), as
 * engine.cc/transformer.cc allocate them: K and V of every KV head of every layer, in the compute
 * type, or packed codes with a scale and a bias per group (64, or 32 where the head is not a multiple
 * of 64) when quantized; `rows` rows of contextPerRow plus the re-alignment slack, and the staging row.
 */
export function mlxKvCacheBytes(
  config: Pick<MlxModelConfig, "numHiddenLayers" | "numKeyValueHeads" | "headDim">,
  dtype: MlxModelInfo["dtype"],
  rows: number,
  kvBits: 4 | 8 | undefined,
  contextPerRow: number,
): number {
  const elem = dtype === "float32" ? 4 : 2;
  const d = config.headDim;
  const group = d % 64 === 0 ? 64 : 32;
  const perPosition = kvBits ? d * (kvBits / 8) + 2 * (d / group) * elem : d * elem;
  const perCell = 2 * config.numHiddenLayers * config.numKeyValueHeads * perPosition;
  return (rows * (contextPerRow + slack(contextPerRow)) + contextPerRow) * perCell;
}

/**
 * Bytes a loaded checkpoint takes with a scheduler of `maxBatch` rows of `contextPerRow` tokens: its
 * weights, the KV caches (mlxKvCacheBytes), and the largest transient buffer, the attention scores of
 * a prefill chunk (float32, every head, the whole row).
 */
export function mlxMemoryNeed(
  config: MlxModelConfig,
  info: Pick<MlxModelInfo, "sizeBytes" | "dtype">,
  settings: Pick<MlxRunnerSettings, "maxBatch" | "kvBits" | "prefillChunk">,
): (contextPerRow: number) => number {
  return (contextPerRow) => {
    const kv = mlxKvCacheBytes(config, info.dtype, settings.maxBatch, settings.kvBits, contextPerRow);
    const scores =
      4 * config.numAttentionHeads * Math.max(settings.prefillChunk, settings.maxBatch) * contextPerRow;
    return info.sizeBytes + kv + scores;
  };
}

const gib = (bytes: number) => `${(bytes / 1024 ** 3).toFixed(2)} GiB`;

/**
 * Loads a (vetted) checkpoint: its tokenizer, its weights on a new engine thread, and a scheduler
 * whose rows hold min(maxContext, the trained context) tokens, lowered to fit the memory budget.
 * `stillWanted` as in the other engines: a model unloaded (or an engine closed) meanwhile is freed
 * and reported not found.
 */
export async function openMlxRunner(
  llama: Llama,
  file: ModelFile,
  settings: MlxRunnerSettings,
  log: EngineLog,
  stillWanted: () => boolean,
): Promise<MlxRunner> {
  return assembleRunner(
    file,
    stillWanted,
    async (held) => {
      const tokenizer = await openCheckpointTokenizer(llama, file, settings.vocabularyCacheDir);
      held.tokenizer = tokenizer;
      const model = await MlxModel.load(file.path);
      held.model = model;
      const info = model.info();
      const wanted = Math.min(settings.maxContext, info.nCtxTrain);
      const needs = mlxMemoryNeed(model.config, info, settings);
      const contextPerRow = await fitContext(needs, wanted, settings, log);
      const budget = settings.memoryBudgetBytes;
      const need = await needs(contextPerRow);
      if (budget !== undefined && need > budget)
        throw new Error(
          `does not fit: needs ${gib(need)} for ${settings.maxBatch} rows of ${contextPerRow} tokens, ` +
            `the budget is ${gib(budget)} (lower --max-batch, or --kv-bits 8 or 4)`,
        );
      held.scheduler = await model.createScheduler({
        rows: settings.maxBatch,
        contextPerRow,
        prefillChunk: settings.prefillChunk,
        queueDepth: settings.queueDepth,
        ...(settings.kvBits ? { kvBits: settings.kvBits } : {}),
      });
      const scheduler = held.scheduler;
      // The core samples from logits alone: the entries' bytes come from the vocabulary.
      const pieces = vocabularyPieces(describeVocabulary(tokenizer));
      return {
        tokenizer,
        model,
        scheduler,
        rows: settings.maxBatch,
        maxContext: contextPerRow,
        threads: settings.threads,
        ...(pieces ? { piece: cachedPieces(pieces) } : {}),
      };
    },
    (err) => {
      if (mlxErrorCode(err) === "mlx_not_built")
        return new EngineError("engine_failed", errorMessage(err), 500, { cause: err });
      return loadFailure(file, err instanceof VocabularyError ? err.message : errorMessage(err), err);
    },
  );
}
