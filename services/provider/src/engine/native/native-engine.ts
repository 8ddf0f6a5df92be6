/**
 * The `native-llama` engine: llama.cpp through the project's own addon (@darkbloom/native/llama), a
 * continuous-batching core in C++ with one engine thread per model (native-runner.ts). It takes the
 * llama engine's options with the same meanings and shares what is not tied to node-llama-cpp:
 * request validation, text, stop strings and billing (generation-job.ts), meters, the threads
 * choice, the model validator and the memory-budget fit; the scheduler's side is shared with the mlx
 * engine (scheduler-engine.ts). node-llama-cpp is used only for the vocabulary-only tokenizer that
 * renders prompts and counts text, never for weights.
 *
 * The addon is built for the CPU: `gpu` is accepted for option compatibility and ignored.
 */
import { llamaErrorCode } from "@darkbloom/native/llama";
import type { Llama } from "node-llama-cpp";
import type { EngineDevice, ModelFile } from "../engine.js";
import type { LlamaEngineOptions } from "../llama/llama-engine.js";
import type { LlamaSetup, ModelHostStats } from "../model-host.js";
import { type NativeRunner, openNativeRunner } from "./native-runner.js";
import { SchedulerEngine } from "./scheduler-engine.js";

/** The llama engine's options; `gpu` is optional and ignored (the addon computes on the CPU). */
export type NativeEngineOptions = Omit<LlamaEngineOptions, "gpu"> & { gpu?: LlamaEngineOptions["gpu"] };

/** The llama engine's stats, measured by the native schedulers. */
export type NativeEngineStats = ModelHostStats;

export class NativeEngine extends SchedulerEngine<NativeRunner> {
  readonly backend = "native-llama";
  protected readonly enforcesGrammar = true;
  /** The core computes each sampled token's raw log-probabilities from the logits it samples. */
  protected override readonly reportsLogprobs = true;
  protected readonly runtimeName = "node-llama-cpp";

  constructor(options: NativeEngineOptions) {
    super(options, {
      maxBatchLimit: { rows: 256, message: "maxBatch must be at most 256 on the native engine" },
    });
  }

  /** The addon is built for the CPU only. */
  async device(): Promise<EngineDevice> {
    return { accelerator: "cpu", gpus: [] };
  }

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

  protected errorCode(err: unknown): string | undefined {
    return llamaErrorCode(err);
  }
}
