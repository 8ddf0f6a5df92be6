import type { Logger } from "pino";
import type { ProviderConfig } from "../config/config.js";
import type { Engine } from "../engine/engine.js";
import { LlamaEngine } from "../engine/llama/llama-engine.js";

/**
 * The engine `serve` and `doctor` use: llama.cpp through node-llama-cpp with the configured knobs,
 * on the GPU when the prebuilt binaries find one. Imported lazily so that other commands do not load
 * node-llama-cpp.
 */
export async function createDefaultEngine(config: ProviderConfig, logger: Logger): Promise<Engine> {
  const log = logger.child({ engine: "llama" });
  return new LlamaEngine({
    maxBatch: config.maxBatch,
    maxContext: config.maxContext,
    kvBits: config.kvBits,
    threads: config.threads,
    idleTimeoutMinutes: config.idleTimeoutMinutes,
    gpu: "auto",
    onLog: (level, message) => log[level](message),
  });
}
