/**
 * The `native-llama` engine: llama.cpp through the project's own addon (@darkbloom/native/llama), a
 * continuous-batching core in C++ with one engine thread per model (native-runner.ts). It takes the
 * llama engine's options with the same meanings and shares what is not tied to node-llama-cpp:
 * request validation, text, stop strings and billing (generation-job.ts), meters, the threads
 * choice, the model validator and the memory-budget fit; the scheduler's side is shared with the mlx
 * engine (scheduler-engine.ts). node-llama-cpp is used only for the vocabulary-only tokenizer that
 * renders prompts and counts text, never for weights.
 *
 * The addon computes on the CPU, on NVIDIA GPUs where it was built with CUDA
 * (native/scripts/llama-gpu.mjs) and the driver finds one, and on Apple silicon's GPU with Metal: a
 * model's layers then go to the GPUs (gpu-placement.ts), and the engine reports them as its device.
 * `gpu: false` keeps them on the CPU.
 */
import { type LlamaHardware, llamaErrorCode, llamaHardware } from "@darkbloom/native/llama";
import type { Llama } from "node-llama-cpp";
import type { EngineDevice, ModelFile } from "../engine.js";
import type { LlamaEngineOptions } from "../llama/llama-engine.js";
import type { LlamaSetup, ModelHostStats } from "../model-host.js";
import { nativeDevice } from "./gpu-placement.js";
import { type NativeRunner, openNativeRunner } from "./native-runner.js";
import { SchedulerEngine } from "./scheduler-engine.js";

/** The llama engine's options; `gpu` defaults to "auto" (the GPUs the addon found, if any). */
export type NativeEngineOptions = Omit<LlamaEngineOptions, "gpu"> & {
  gpu?: LlamaEngineOptions["gpu"];
  /** What the addon computes on (default: its `llamaHardware()`; tests give GPUs of their own). */
  hardware?: () => LlamaHardware | undefined;
};

/** The llama engine's stats, measured by the native schedulers. */
export type NativeEngineStats = ModelHostStats;

export class NativeEngine extends SchedulerEngine<NativeRunner> {
  readonly backend = "native-llama";
  protected readonly enforcesGrammar = true;
  /** The core computes each sampled token's raw log-probabilities from the logits it samples. */
  protected override readonly reportsLogprobs = true;
  protected readonly runtimeName = "node-llama-cpp";

  private readonly gpu: false | "auto";
  private readonly hardware: () => LlamaHardware | undefined;

  constructor(options: NativeEngineOptions) {
    super(options, {
      maxBatchLimit: { rows: 256, message: "maxBatch must be at most 256 on the native engine" },
    });
    const gpu = options.gpu ?? "auto";
    if (gpu !== false && gpu !== "auto") throw new Error('gpu must be false or "auto"');
    this.gpu = gpu;
    this.hardware = options.hardware ?? llamaHardware;
  }

  /** The GPUs the addon found (a CUDA build where the driver sees one, Metal on a Mac), else the CPU. */
  async device(): Promise<EngineDevice> {
    const hardware = this.hardware();
    return this.gpu === false || !hardware ? { accelerator: "cpu", gpus: [] } : nativeDevice(hardware);
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
    const settings = { ...this.settings, gpu: this.gpu, hardware: this.hardware, threads };
    return openNativeRunner(llama, file, settings, this.log, stillWanted);
  }

  protected errorCode(err: unknown): string | undefined {
    return llamaErrorCode(err);
  }
}
