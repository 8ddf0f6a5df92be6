import { MemoryPressure, ThermalState } from "@darkbloom/protocol/provider/v1";
import type { ProviderHandle } from "./provider-handle.js";
import { FAILURE_PENALTY } from "./provider-performance.js";

/** The shape of a request as the scheduler sees it. */
export interface RouteDemand {
  model: string;
  promptTokens: number;
  maxTokens: number;
}

/** Rates assumed for a provider nobody has measured yet (and the most its advertised figures count for). */
export const DEFAULT_DECODE_TPS = 20;
export const DEFAULT_PREFILL_TPS = 200;
/** Per extra batch row, each row's decode rate drops by this fraction (continuous batching shares compute). */
export const BATCH_DEGRADATION = 0.15;
/** Seconds charged for a model that must be loaded before it can serve. */
export const COLD_LOAD_SECONDS = 8;

/**
 * Estimated seconds until the provider would finish this request: model load if cold, its own queue
 * (requests it admitted but has not started), this request's prefill, and its decode at the per-row
 * rate the provider will have with one more row in its batch, all at the rates the coordinator
 * measured of it (its advertised rates only as a clamped prior: routing/provider-performance.ts).
 * Memory pressure and thermal throttling stretch the estimate, and so do its recent failures: a
 * provider that fails half its requests looks three times slower.
 */
export function estimateCompletionSeconds(
  p: ProviderHandle,
  demand: RouteDemand,
  now: number = Date.now(),
): number {
  const perf = p.performance;
  const decode = perf.rate(demand.model, "decode", p.decodeTokensPerSecond, DEFAULT_DECODE_TPS, now);
  const prefill = perf.rate(demand.model, "prefill", p.prefillTokensPerSecond, DEFAULT_PREFILL_TPS, now);
  const rows = Math.min(p.maxBatch, p.inFlight + 1);
  const rowRate = decode / (1 + BATCH_DEGRADATION * (rows - 1));
  const load = p.loadedModels.has(demand.model) ? 0 : COLD_LOAD_SECONDS;
  // A provider's own queue holds work that must start before ours; assume each queued request is
  // about as long as this one.
  const backlog = p.queueDepth * (demand.maxTokens / (decode * p.maxBatch));
  const seconds = load + backlog + demand.promptTokens / prefill + demand.maxTokens / rowRate;
  return seconds * healthFactor(p) * (1 + FAILURE_PENALTY * perf.failureRate(now));
}

function healthFactor(p: ProviderHandle): number {
  let f = 1;
  if (p.memoryPressure === MemoryPressure.WARN) f *= 1.25;
  else if (p.memoryPressure === MemoryPressure.CRITICAL) f *= 3;
  if (p.thermalState === ThermalState.SERIOUS) f *= 1.5;
  else if (p.thermalState === ThermalState.CRITICAL) f *= 3;
  return f;
}
