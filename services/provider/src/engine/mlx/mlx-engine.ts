/**
 * The `mlx` engine: MLX checkpoint directories (mlx-community's Qwen3 and Llama checkpoints, 4-/8-bit
 * or float) through the project's MLX batching core (@darkbloom/native/mlx). It is the native-llama
 * engine with another core under it: the model lifecycle (vetting in a child, idle unload, lazy
 * reload, prompt rendering, the context gate) is ModelHostEngine's and the scheduler's side
 * (submitting, stop strings, cancel, busy, stats) SchedulerEngine's; only opening a model differs
 * (mlx-runner.ts: the tokenizer converted from tokenizer.json, the KV cache fitted to memory) and
 * what it computes on (MLX's default device: Metal on Apple silicon, the CPU on a Linux build).
 *
 * It takes the other engines' options with the same meanings, but for `threads`: MLX chooses its own
 * CPU parallelism, so the setting is accepted and not applied (threadsFor says undefined).
 */
import { cpus, totalmem } from "node:os";
import { loadMlxBinding, mlxErrorCode } from "@darkbloom/native/mlx";
import type { Llama } from "node-llama-cpp";
import { type AcceleratorName, type EngineDevice, EngineError, type ModelFile } from "../engine.js";
import type { LlamaSetup, ModelHostOptions, ModelHostStats } from "../model-host.js";
import { SchedulerEngine } from "../native/scheduler-engine.js";
import { type MlxRunner, openMlxRunner } from "./mlx-runner.js";
import { sharedMlxValidator } from "./mlx-validator.js";

export interface MlxEngineOptions extends ModelHostOptions {
  /**
   * Where the vocabularies converted from checkpoints' tokenizer.json are kept, by checkpoint hash
   * (the factory passes `<dataDir>/vocabularies`); undefined converts at each load.
   */
  vocabularyCacheDir?: string | undefined;
}

export type MlxEngineStats = ModelHostStats;

/** The addon's name for its device, as an accelerator (it says "metal", "cuda" or "cpu"). */
function acceleratorOf(device: string): AcceleratorName {
  return device === "metal" || device === "cuda" ? device : "cpu";
}

export class MlxEngine extends SchedulerEngine<MlxRunner> {
  readonly backend = "mlx";
  /** The MLX core's host sampler has no grammar matcher (its core refuses a grammar too). */
  protected readonly enforcesGrammar = false;
  /**
   * The core computes each sampled token's raw log-probabilities; their bytes come from the
   * checkpoint's vocabulary (byte-level BPE, as the Qwen3 and Llama 3 families' are).
   */
  protected override readonly reportsLogprobs = true;
  protected readonly runtimeName = "node-llama-cpp";
  protected override readonly modelFormat = "mlx" as const;
  private readonly vocabularyCacheDir: string | undefined;

  constructor(options: MlxEngineOptions) {
    super(options, {
      maxBatchLimit: { rows: 256, message: "maxBatch must be at most 256 on the mlx engine" },
      defaultValidator: sharedMlxValidator,
    });
    this.vocabularyCacheDir = options.vocabularyCacheDir;
  }

  /**
   * MLX's default device, as the addon reports it. On Apple silicon the GPU shares the machine's
   * memory: reported as the unified memory in all (MLX's own limit is a share of it that the addon
   * does not expose). Throws engine_failed where the addon is not built.
   */
  async device(): Promise<EngineDevice> {
    const binding = loadMlxBinding();
    if (!binding) throw new EngineError("engine_failed", "the mlx engine is not built on this machine", 500);
    const accelerator = acceleratorOf(binding.device());
    if (accelerator === "cpu") return { accelerator, gpus: [] };
    const name = accelerator === "metal" ? `${cpus()[0]?.model ?? "Apple silicon"} GPU` : "CUDA GPU (MLX)";
    return { accelerator, gpus: [{ name, memoryBytes: accelerator === "metal" ? totalmem() : 0 }] };
  }

  /** MLX picks its own CPU threads: no count applies to an MLX model. */
  override threadsFor(_modelId: string): number | undefined {
    return undefined;
  }

  /** node-llama-cpp for the vocabulary-only tokenizers: no GPU, one thread, its prebuilt binary. */
  protected async llamaSetup(): Promise<LlamaSetup> {
    return { gpu: false, maxThreads: 1, vocabularyOnly: true };
  }

  protected openRunner(
    llama: Llama,
    file: ModelFile,
    threads: number,
    stillWanted: () => boolean,
  ): Promise<MlxRunner> {
    const settings = { ...this.settings, threads, vocabularyCacheDir: this.vocabularyCacheDir };
    return openMlxRunner(llama, file, settings, this.log, stillWanted);
  }

  protected override computeNote(): string {
    return `on ${loadMlxBinding()?.device() ?? "cpu"} (MLX's default device and its own CPU threads)`;
  }

  protected errorCode(err: unknown): string | undefined {
    return mlxErrorCode(err);
  }
}
