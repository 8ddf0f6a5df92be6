import { MemoryPressure, ThermalState } from "@darkbloom/protocol/provider/v1";
import type { ProviderHandle } from "./provider-handle.js";

/** The shape of a request as the scheduler sees it. */
export interface RouteDemand {
  model: string;
  promptTokens: number;
  maxTokens: number;
}

/** Rates assumed for a provider that has not reported measurements yet. */
export const DEFAULT_DECODE_TPS = 20;
export const DEFAULT_PREFILL_TPS = 200;
/** Per extra batch row, each row's decode rate drops by this fraction (continuous batching shares compute). */
export const BATCH_DEGRADATION = 0.15;
/** Seconds charged for a model that must be loaded before it can serve. */
export const COLD_LOAD_SECONDS = 8;

/**
 * Estimated seconds until the provider would finish this request: model load if cold, its own queue
 * (requests it admitted but has not started) at its measured rate, this request's prefill, and its
 * decode at the per-row rate the provider will have with one more row in its batch. Memory pressure
 * and thermal throttling stretch the estimate.
 */
export function estimateCompletionSeconds(p: ProviderHandle, demand: RouteDemand): number {
  const decode = p.decodeTokensPerSecond > 0 ? p.decodeTokensPerSecond : DEFAULT_DECODE_TPS;
  const prefill = p.prefillTokensPerSecond > 0 ? p.prefillTokensPerSecond : DEFAULT_PREFILL_TPS;
  const rows = Math.min(p.maxBatch, p.inFlight + 1);
  const rowRate = decode / (1 + BATCH_DEGRADATION * (rows - 1));
  const load = p.loadedModels.has(demand.model) ? 0 : COLD_LOAD_SECONDS;
  // A provider's own queue holds work that must start before ours; assume each queued request is
  // about as long as this one.
  const backlog = p.queueDepth * (demand.maxTokens / (decode * p.maxBatch));
  const seconds = load + backlog + demand.promptTokens / prefill + demand.maxTokens / rowRate;
  return seconds * healthFactor(p);
}

function healthFactor(p: ProviderHandle): number {
  let f = 1;
  if (p.memoryPressure === MemoryPressure.WARN) f *= 1.25;
  else if (p.memoryPressure === MemoryPressure.CRITICAL) f *= 3;
  if (p.thermalState === ThermalState.SERIOUS) f *= 1.5;
  else if (p.thermalState === ThermalState.CRITICAL) f *= 3;
  return f;
}
