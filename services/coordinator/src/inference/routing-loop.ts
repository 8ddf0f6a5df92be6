/**
 * Routing with invisible retries, for every kind of request: a provider is leased, the attempt runs
 * on it, and while an attempt ends "retry" (nothing reached the consumer) the request goes to another
 * provider, up to the configured retries.
 */
import type { CoordinatorConfig } from "../config.js";
import { ApiError, providerError } from "../errors/index.js";
import type { Logger } from "../log.js";
import type { CoordinatorMetrics } from "../metrics.js";
import type { RouteDemand } from "../routing/cost-model.js";
import type { DispatchTarget, ProviderPool } from "../routing/provider-pool.js";
import type { Lease } from "../routing/router.js";
import type { RouteConstraints } from "../routing/scheduler.js";
import type { AttemptOutcome } from "./attempt.js";
import type { Timing } from "./timing.js";

export interface RoutingDeps {
  config: CoordinatorConfig;
  providers: ProviderPool;
  metrics: CoordinatorMetrics;
  log: Logger;
}

/** What routing needs to know of a request. */
export interface RoutedRequest {
  requestId: string;
  model: string;
  demand: RouteDemand;
  constraints: RouteConstraints;
  timing: Timing;
}

/**
 * Serves `request` with `attempt` on one provider after another. Resolves undefined once an attempt
 * is done (or the consumer left while it waited for a provider), else with the error to fail the
 * request with: routing's own (a 503 after the queue wait), or no provider left to try.
 */
export async function routeWithRetries(
  deps: RoutingDeps,
  request: RoutedRequest,
  signal: AbortSignal,
  attempt: (session: DispatchTarget, lease: Lease) => Promise<AttemptOutcome>,
): Promise<ApiError | undefined> {
  const { providers, config, metrics } = deps;
  const exclude = new Set<string>(request.constraints.exclude);
  let lastFailure = "";
  let departed = false;
  for (let tries = 0; tries <= config.maxRetries; tries++) {
    const constraints: RouteConstraints = { ...request.constraints, exclude };
    // After a failure the request ends when no other provider could serve it. After a departure
    // (a rolling restart moves every provider of a model at once) it waits in the queue as a new
    // arrival would, for the provider to reconnect or another to come.
    if (tries > 0 && !departed && !providers.hasEligibleProvider(request.demand, constraints)) break;
    const routeStart = performance.now();
    let lease: Lease;
    try {
      lease = await providers.acquire(request.demand, constraints, signal);
    } catch (e) {
      if (signal.aborted) return undefined;
      return e instanceof ApiError ? e : providerError("routing failed");
    }
    request.timing.addMicros("queue", lease.queuedMicros);
    request.timing.addMicros(
      "route",
      Math.max(0, Math.round((performance.now() - routeStart) * 1000) - lease.queuedMicros),
    );
    lease.provider.noteUse(request.model);
    const session = providers.target(lease.provider);
    if (!session) {
      lease.release();
      exclude.add(lease.provider.id);
      continue;
    }
    metrics.inFlight.inc();
    let outcome: AttemptOutcome;
    try {
      outcome = await attempt(session, lease);
    } finally {
      metrics.inFlight.dec();
      lease.release();
    }
    if (outcome.kind === "done") return undefined;
    exclude.add(lease.provider.id);
    lastFailure = outcome.reason;
    departed = outcome.departed === true;
    metrics.retries.inc({ reason: outcome.reason });
    deps.log.info(
      { requestId: request.requestId, providerId: lease.provider.id, reason: outcome.reason },
      "retrying on another provider",
    );
  }
  return providerError(
    `No provider could complete the request (last failure: ${lastFailure || "no eligible provider left"}).`,
  );
}
