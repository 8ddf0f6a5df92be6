/**
 * A model loaded by the native engine: the addon's model and one scheduler over it, the
 * vocabulary-only tokenizer of the same file, and the jobs submitted to it (SchedulerRunner, shared
 * with the mlx engine).
 */
import { ModelTokenizer } from "@darkbloom/models";
import { type KvType, llamaErrorCode, NativeLlamaModel } from "@darkbloom/native/llama";
import type { Llama } from "node-llama-cpp";
import { EngineError, type ModelFile } from "../engine.js";
import { fitContext, ggufMemoryNeed } from "../llama/memory-estimate.js";
import { type EngineLog, loadFailure } from "../llama/model-runner.js";
import { errorMessage } from "../meters.js";
import {
  assembleRunner,
  cachedPieces,
  type SchedulerRunner,
  type SchedulerRunnerSettings,
} from "./scheduler-runner.js";

/** A model of the native engine (its runner's model is a NativeLlamaModel). */
export type NativeRunner = SchedulerRunner;

/** How every model's scheduler is made. */
export type NativeRunnerSettings = SchedulerRunnerSettings;

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
  return assembleRunner(
    file,
    stillWanted,
    async (held) => {
      const tokenizer = await ModelTokenizer.open(llama, file.path);
      held.tokenizer = tokenizer;
      const model = await NativeLlamaModel.load(file.path, { gpuLayers: 0 });
      held.model = model;
      const info = model.info();
      const wanted = info.nCtxTrain > 0 ? Math.min(settings.maxContext, info.nCtxTrain) : settings.maxContext;
      const batchSize = Math.max(settings.prefillChunk, settings.maxBatch);
      const maxContext = await fitContext(
        ggufMemoryNeed(tokenizer.model.fileInsights, info.sizeBytes, 0, batchSize, settings),
        wanted,
        settings,
        log,
      );
      const kvType: KvType = settings.kvBits === 8 ? "q8_0" : settings.kvBits === 4 ? "q4_0" : "f16";
      held.scheduler = await model.createScheduler({
        rows: settings.maxBatch,
        contextPerRow: maxContext,
        threads: settings.threads,
        kvType,
        prefillChunk: settings.prefillChunk,
        queueDepth: settings.queueDepth,
      });
      const scheduler = held.scheduler;
      const piece = cachedPieces((token) => model.piece(token, false));
      return {
        tokenizer,
        model,
        scheduler,
        rows: settings.maxBatch,
        maxContext,
        threads: settings.threads,
        piece,
      };
    },
    (err) =>
      llamaErrorCode(err) === "llama_not_built"
        ? new EngineError("engine_failed", errorMessage(err), 500, { cause: err })
        : loadFailure(file, errorMessage(err), err),
  );
}
