import { trustRank, USAGE_VERSION } from "@darkbloom/protocol";
import { type ModelFeature, TrustLevel } from "@darkbloom/protocol/provider/v1";
import { estimateCompletionSeconds, type RouteDemand } from "./cost-model.js";
import type { ProviderHandle } from "./provider-handle.js";

/** Per-request limits on which providers may serve it. */
export interface RouteConstraints {
  minTrust: TrustLevel;
  /** Providers already tried for this request (retries go elsewhere). */
  exclude?: ReadonlySet<string> | undefined;
  /** When set, only these providers may serve it. */
  allow?: ReadonlySet<string> | undefined;
  /**
   * The coordinator counts this model's usage from the text (it holds the vocabulary): only a
   * provider whose usage is that count (Register.usage_version) may serve it, since an older daemon's
   * honest figures (the tokens it sampled) would differ from the count and cut it.
   */
  countedUsage?: boolean;
  /**
   * What the request needs the provider's engine to enforce for the model (a grammar for
   * response_format): only providers that registered the model with every one of them.
   */
  features?: readonly ModelFeature[] | undefined;
}

/** Costs within this fraction of the best are near-ties, broken by queue depth and then at random. */
export const NEAR_TIE = 0.05;

/**
 * Whether a provider may serve this request at all, ignoring whether it has a free slot now. The
 * trust gate: not de-routed, trust level at least the minimum, and above trust level none a passed
 * challenge that is still fresh; for a model whose usage is counted, a daemon that reports the
 * count; and the features the request needs.
 */
export function isEligible(p: ProviderHandle, demand: RouteDemand, c: RouteConstraints): boolean {
  if (p.closed || p.draining || p.deRouted) return false;
  if (c.countedUsage && p.usageVersion < USAGE_VERSION) return false;
  if (c.features && !c.features.every((f) => p.hasFeature(demand.model, f))) return false;
  if (trustRank(p.trustLevel) < trustRank(c.minTrust)) return false;
  if (trustRank(c.minTrust) > trustRank(TrustLevel.NONE) && !p.freshlyAttested()) return false;
  if (c.exclude?.has(p.id)) return false;
  if (c.allow && !c.allow.has(p.id)) return false;
  return demand.promptTokens + demand.maxTokens <= p.contextLimit(demand.model);
}

/**
 * Chooses the provider that would finish the request soonest among those with a free slot.
 * Returns undefined when none has room. The caller reserves the slot in the same tick.
 */
export function chooseProvider(
  candidates: Iterable<ProviderHandle>,
  demand: RouteDemand,
  constraints: RouteConstraints,
  random: () => number = Math.random,
): ProviderHandle | undefined {
  let best = Number.POSITIVE_INFINITY;
  const now = Date.now();
  const scored: Array<{ p: ProviderHandle; cost: number }> = [];
  for (const p of candidates) {
    if (p.freeSlots <= 0 || !isEligible(p, demand, constraints)) continue;
    const cost = estimateCompletionSeconds(p, demand, now);
    scored.push({ p, cost });
    if (cost < best) best = cost;
  }
  if (scored.length === 0) return undefined;
  if (scored.length === 1) return scored[0]?.p;
  const limit = best * (1 + NEAR_TIE);
  let minQueue = Number.POSITIVE_INFINITY;
  let ties: ProviderHandle[] = [];
  for (const { p, cost } of scored) {
    if (cost > limit) continue;
    const queue = p.inFlight + p.queueDepth;
    if (queue < minQueue) {
      minQueue = queue;
      ties = [p];
    } else if (queue === minQueue) {
      ties.push(p);
    }
  }
  return ties[Math.floor(random() * ties.length)] ?? ties[0];
}
