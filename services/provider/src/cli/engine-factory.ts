import { totalmem } from "node:os";
import type { Logger } from "pino";
import type { ProviderConfig } from "../config/config.js";
import type { Engine } from "../engine/engine.js";
import { LlamaEngine } from "../engine/llama/llama-engine.js";

/** Share of the machine's memory the served models may take, weights and contexts together. */
const MEMORY_SHARE = 0.6;

/**
 * The engine `serve` and `doctor` use: llama.cpp through node-llama-cpp with the configured knobs,
 * on the GPU when the prebuilt binaries find one. Imported lazily so that other commands do not load
 * node-llama-cpp. Each model's context is lowered to fit its share of 60% of the machine's memory.
 */
export async function createDefaultEngine(config: ProviderConfig, logger: Logger): Promise<Engine> {
  const log = logger.child({ engine: "llama" });
  return new LlamaEngine({
    maxBatch: config.maxBatch,
    maxContext: config.maxContext,
    kvBits: config.kvBits,
    threads: config.threads,
    memoryBudgetBytes: Math.floor((totalmem() * MEMORY_SHARE) / Math.max(1, config.models.length)),
    idleTimeoutMinutes: config.idleTimeoutMinutes,
    gpu: "auto",
    onLog: (level, message) => log[level](message),
  });
}
