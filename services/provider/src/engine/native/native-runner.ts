/**
 * A model loaded by the native engine: the addon's model and one scheduler over it, the
 * vocabulary-only tokenizer of the same file, and the jobs submitted to it (SchedulerRunner, shared
 * with the mlx engine).
 */
import { ModelTokenizer } from "@darkbloom/models";
import { type KvType, type LlamaHardware, llamaErrorCode, NativeLlamaModel } from "@darkbloom/native/llama";
import type { Llama } from "node-llama-cpp";
import { EngineError, type ModelFile } from "../engine.js";
import { fitContext, ggufMemoryNeed } from "../llama/memory-estimate.js";
import { type EngineLog, loadFailure } from "../llama/model-runner.js";
import { errorMessage } from "../meters.js";
import { nativeGpus, placeLayers } from "./gpu-placement.js";
import {
  assembleRunner,
  cachedPieces,
  type SchedulerRunner,
  type SchedulerRunnerSettings,
} from "./scheduler-runner.js";

/** A model of the native engine (its runner's model is a NativeLlamaModel). */
export type NativeRunner = SchedulerRunner;

/**
 * How every model's scheduler is made: `hardware` is what the addon computes on, and `gpu: false`
 * keeps every layer on the CPU whatever it lists.
 */
export type NativeRunnerSettings = SchedulerRunnerSettings & {
  gpu: false | "auto";
  hardware: () => LlamaHardware | undefined;
};

/**
 * Loads a (vetted) model file: its vocabulary for the tokenizer, its weights into the addon, and a
 * scheduler whose rows hold min(maxContext, the trained context) tokens, lowered to fit the memory
 * budget by node-llama-cpp's estimate of the same context, or to the GPUs' memory where the layers go
 * there (gpu-placement.ts; memory-estimate.ts; the addon's context
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
      const insights = tokenizer.model.fileInsights;
      const trained = insights.trainContextSize ?? 0;
      const wanted = trained > 0 ? Math.min(settings.maxContext, trained) : settings.maxContext;
      const batchSize = Math.max(settings.prefillChunk, settings.maxBatch);
      const need = (gpuLayers: number) =>
        ggufMemoryNeed(insights, insights.modelSize, gpuLayers, batchSize, settings);
      const hardware = settings.hardware();
      const placement = await placeLayers({
        gpus: settings.gpu === false || !hardware ? [] : nativeGpus(hardware),
        totalLayers: insights.totalLayers,
        wantedContext: wanted,
        need,
        cpuBudget: settings.memoryBudgetBytes,
      });
      if (placement.warning) log("warn", `${file.id}: ${placement.warning}`);
      const model = await NativeLlamaModel.load(file.path, { gpuLayers: placement.gpuLayers });
      held.model = model;
      const gpuLayers = placement.gpuLayers < 0 ? insights.totalLayers : placement.gpuLayers;
      const maxContext = await fitContext(
        need(gpuLayers),
        wanted,
        { ...settings, memoryBudgetBytes: placement.budgetBytes },
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
