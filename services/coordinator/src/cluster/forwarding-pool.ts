import { estimateCompletionSeconds, type RouteDemand } from "../routing/cost-model.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import type { DispatchTarget, LocalProviderPool, ProviderPool } from "../routing/provider-pool.js";
import type { Lease, Router } from "../routing/router.js";
import type { RouteConstraints } from "../routing/scheduler.js";
import type { RemoteProviders } from "./remote-providers.js";

/**
 * What forwarding must save to be chosen over a free local provider: the hop costs the two replicas
 * about 1.5 ms of CPU a request and adds a few tenths of a millisecond to the first token
 * (`npm run bench:forwarding`), so between providers about as fast, the local one serves.
 */
export const FORWARD_COST_SECONDS = 0.005;

/**
 * Every provider in the cluster: this replica's own streams and, forwarded to the replica holding
 * them, the others'. A request takes the provider that would finish it soonest among the cheapest
 * free one of each side, forwarding only when that saves more than FORWARD_COST_SECONDS; with none
 * free it waits in both sides' queues and takes the first slot either frees.
 */
export class ForwardingPool implements ProviderPool {
  constructor(
    private readonly local: LocalProviderPool,
    private readonly remote: RemoteProviders,
  ) {}

  serves(model: string): boolean {
    return this.local.serves(model) || this.remote.registry.serving(model).size > 0;
  }

  contextLimit(model: string): number {
    const local = this.local.serves(model) ? this.local.contextLimit(model) : 0;
    const remote =
      this.remote.registry.serving(model).size > 0 ? this.remote.registry.contextLimit(model) : 0;
    return Math.max(local, remote);
  }

  hasEligibleProvider(demand: RouteDemand, constraints: RouteConstraints): boolean {
    return (
      this.local.hasEligibleProvider(demand, constraints) ||
      this.remote.router.hasEligibleProvider(demand, constraints)
    );
  }

  async acquire(demand: RouteDemand, constraints: RouteConstraints, signal?: AbortSignal): Promise<Lease> {
    const local = this.local.router;
    const remote = this.remote.router;
    // A free slot is taken at once on each side with nobody queued ahead; the cheaper one is kept.
    const mine = local.queueLength(demand.model) === 0 ? local.tryAcquire(demand, constraints) : undefined;
    const theirs =
      remote.queueLength(demand.model) === 0 ? remote.tryAcquire(demand, constraints) : undefined;
    if (mine && theirs) {
      const now = Date.now();
      const forwardCheaper =
        estimateCompletionSeconds(theirs.provider, demand, now) + FORWARD_COST_SECONDS <
        estimateCompletionSeconds(mine.provider, demand, now);
      (forwardCheaper ? mine : theirs).release();
      return forwardCheaper ? theirs : mine;
    }
    if (mine || theirs) return (mine ?? theirs) as Lease;
    const localCan = local.hasEligibleProvider(demand, constraints);
    const remoteCan = remote.hasEligibleProvider(demand, constraints);
    if (localCan && !remoteCan) return local.acquire(demand, constraints, signal);
    if (remoteCan && !localCan) return remote.acquire(demand, constraints, signal);
    // Both could serve it, or neither can yet: the provider that comes may connect to any replica.
    return firstLease([local, remote], demand, constraints, signal);
  }

  target(provider: ProviderHandle): DispatchTarget | undefined {
    return this.local.target(provider) ?? this.remote.target(provider.id);
  }
}

/**
 * Waits in every router's queue and resolves with the first lease; the other waits are withdrawn
 * (and a lease that raced in is given back). Rejects only when every router rejected (with the
 * first rejection), or with the signal's reason.
 */
function firstLease(
  routers: Router[],
  demand: RouteDemand,
  constraints: RouteConstraints,
  signal?: AbortSignal,
): Promise<Lease> {
  return new Promise((resolve, reject) => {
    const withdraw = routers.map(() => new AbortController());
    const onAbort = () => {
      for (const w of withdraw) w.abort(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    let won = false;
    let failures = 0;
    let firstError: unknown;
    routers.forEach((router, i) => {
      router.acquire(demand, constraints, withdraw[i]?.signal).then(
        (lease) => {
          if (won) {
            lease.release();
            return;
          }
          won = true;
          signal?.removeEventListener("abort", onAbort);
          for (const [j, w] of withdraw.entries()) if (j !== i) w.abort();
          resolve(lease);
        },
        (e: unknown) => {
          if (won) return;
          firstError ??= e;
          if (++failures < routers.length && !signal?.aborted) return;
          signal?.removeEventListener("abort", onAbort);
          reject(signal?.aborted ? signal.reason : firstError);
        },
      );
    });
  });
}
