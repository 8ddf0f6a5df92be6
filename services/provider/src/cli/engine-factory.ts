import { totalmem } from "node:os";
import type { Logger } from "pino";
import type { ProviderConfig } from "../config/config.js";
import type { AcceleratorName, Engine } from "../engine/engine.js";
import { LlamaEngine, type LlamaEngineOptions } from "../engine/llama/llama-engine.js";
import { machineAccelerator } from "../machine/hardware.js";
import { UsageError } from "./io.js";

/** Share of the machine's memory the served models may take, weights and contexts together. */
const MEMORY_SHARE = 0.6;

/** What the choice depends on besides the settings (tests give their own). */
export interface EngineChoiceDeps {
  /** Whether @darkbloom/native/llama's addon loads here. */
  nativeAvailable?: () => Promise<boolean>;
  /** The machine's GPU (machineAccelerator). */
  accelerator?: () => AcceleratorName;
}

/**
 * The engine `serve` and `doctor` use, by the `engine` setting: "llama" is llama.cpp through
 * node-llama-cpp, on the GPU when the prebuilt binaries find one; "native" the project's batching
 * core (@darkbloom/native/llama, built for the CPU), refused with a usage error when its addon is not
 * built; "auto" native on a machine without a GPU when the addon loads, else llama (with one warning
 * line when the addon is what is missing). Imported lazily so that other commands load neither.
 * Each model's context is lowered to fit its share of 60% of the machine's memory.
 */
export async function createDefaultEngine(
  config: ProviderConfig,
  logger: Logger,
  deps: EngineChoiceDeps = {},
): Promise<Engine> {
  const options: Omit<LlamaEngineOptions, "onLog"> = {
    maxBatch: config.maxBatch,
    maxContext: config.maxContext,
    kvBits: config.kvBits,
    threads: config.threads,
    memoryBudgetBytes: Math.floor((totalmem() * MEMORY_SHARE) / Math.max(1, config.models.length)),
    idleTimeoutMinutes: config.idleTimeoutMinutes,
    gpu: "auto",
  };
  // The native core computes on the CPU: on a machine with a GPU, auto keeps node-llama-cpp's GPU build.
  const gpu = (deps.accelerator ?? machineAccelerator)() !== "cpu";
  if (config.engine === "native" || (config.engine === "auto" && !gpu)) {
    const available = deps.nativeAvailable ?? nativeAddonAvailable;
    if (await available()) {
      const { NativeEngine } = await import("../engine/native/native-engine.js");
      const log = logger.child({ engine: "native-llama" });
      return new NativeEngine({ ...options, onLog: (level, message) => log[level](message) });
    }
    if (config.engine === "native")
      throw new UsageError(
        "--engine native needs the llama addon, which is not built here: run npm run build:native",
      );
    logger.warn(
      "the native llama addon is not built (npm run build:native): using the llama engine (node-llama-cpp)",
    );
  }
  const log = logger.child({ engine: "llama" });
  return new LlamaEngine({ ...options, onLog: (level, message) => log[level](message) });
}

async function nativeAddonAvailable(): Promise<boolean> {
  const { nativeLlamaAvailable } = await import("@darkbloom/native/llama");
  return nativeLlamaAvailable();
}
