import { ModelFeature } from "@darkbloom/protocol/provider/v1";
import { modelNotAvailable } from "../errors/index.js";
import type { CoordinatorMetrics } from "../metrics.js";
import type { RouteDemand } from "./cost-model.js";
import type { ProviderHandle } from "./provider-handle.js";
import type { ProviderRegistry } from "./provider-registry.js";
import { RoomIndex } from "./room-index.js";
import { chooseProvider, isEligible, type RouteConstraints } from "./scheduler.js";

/**
 * A request is scored against at most this many providers with a free slot, drawn at random when
 * more have room (the power of k choices): with up to this many the choice is exact, with 10,000 it
 * stays microseconds.
 */
export const ROUTE_SAMPLE = 32;

/** A reserved slot on a provider. release() frees it (idempotent). */
export interface Lease {
  readonly provider: ProviderHandle;
  /** Microseconds spent waiting in the model queue. */
  readonly queuedMicros: number;
  release(): void;
}

interface Waiter {
  demand: RouteDemand;
  constraints: RouteConstraints;
  enqueuedAt: number;
  resolve: (lease: Lease) => void;
  reject: (e: unknown) => void;
  cleanup: () => void;
}

export interface RouterOptions {
  queueDepthPerModel: number;
  queueTimeoutMs: number;
}

/**
 * Reserves provider slots: picks the cheapest provider with room at once, or queues the request per
 * model (bounded depth, bounded wait) until a slot frees, a heartbeat reports capacity, or a provider
 * registers.
 */
export class Router {
  private readonly queues = new Map<string, Waiter[]>();
  private readonly room = new RoomIndex();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly registry: ProviderRegistry,
    private readonly options: RouterOptions,
    private readonly metrics?: CoordinatorMetrics,
  ) {
    for (const p of registry.all()) this.room.update(p);
    this.unsubscribe = registry.subscribe((e) => {
      // Capacity too: a remote provider's free slots change with the directory's view of its load.
      this.room.update(e.provider);
      if (e.kind === "removed") return;
      for (const model of e.provider.models.keys()) this.drain(model);
    });
  }

  /** Whether some connected provider could ever serve this demand (capacity aside). */
  hasEligibleProvider(demand: RouteDemand, constraints: RouteConstraints): boolean {
    for (const p of this.registry.serving(demand.model)) if (isEligible(p, demand, constraints)) return true;
    return false;
  }

  queueLength(model: string): number {
    return this.queues.get(model)?.length ?? 0;
  }

  tryAcquire(demand: RouteDemand, constraints: RouteConstraints): Lease | undefined {
    const p = this.choose(demand, constraints);
    return p ? this.lease(p, 0) : undefined;
  }

  /**
   * The provider with a free slot that would finish the request soonest: among the allowed ones when
   * the request names them, else among a sample of those with room; when none of a sample is
   * eligible (trust, exclusions, context), among all of them.
   */
  private choose(demand: RouteDemand, constraints: RouteConstraints): ProviderHandle | undefined {
    if (constraints.allow) {
      const allowed: ProviderHandle[] = [];
      for (const id of constraints.allow) {
        const p = this.registry.get(id);
        if (p?.models.has(demand.model)) allowed.push(p);
      }
      return chooseProvider(allowed, demand, constraints);
    }
    const chosen = chooseProvider(this.room.sample(demand.model, ROUTE_SAMPLE), demand, constraints);
    if (chosen || this.room.count(demand.model) <= ROUTE_SAMPLE) return chosen;
    return chooseProvider(this.room.all(demand.model), demand, constraints);
  }

  /** Resolves with a lease, or rejects with a 503 ApiError or the signal's abort reason. */
  acquire(demand: RouteDemand, constraints: RouteConstraints, signal?: AbortSignal): Promise<Lease> {
    // A request that finds a free slot skips the queue only if nobody is waiting ahead of it.
    if (this.queueLength(demand.model) === 0) {
      const lease = this.tryAcquire(demand, constraints);
      if (lease) return Promise.resolve(lease);
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    const queue = this.queues.get(demand.model) ?? [];
    if (queue.length >= this.options.queueDepthPerModel) {
      return Promise.reject(modelNotAvailable(demand.model, "queue full", 1));
    }
    this.queues.set(demand.model, queue);
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        demand,
        constraints,
        enqueuedAt: performance.now(),
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
        },
      };
      const timer = setTimeout(() => {
        this.dequeue(waiter);
        const retryAfter = Math.max(1, Math.round(this.options.queueTimeoutMs / 6000));
        reject(
          modelNotAvailable(
            demand.model,
            this.unservedFeature(demand.model, constraints) ??
              `waited ${Math.round(this.options.queueTimeoutMs / 1000)} s for a provider slot`,
            retryAfter,
          ),
        );
      }, this.options.queueTimeoutMs);
      timer.unref?.();
      const onAbort = () => {
        this.dequeue(waiter);
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      queue.push(waiter);
      this.metrics?.queueDepth.set({ model: demand.model }, queue.length);
    });
  }

  /**
   * Why no provider could have taken the request, when the model is served but none of its providers
   * has what the request needs (a grammar for response_format or tools, log-probabilities: MLX
   * providers have neither),
   * so the 503 says so rather than blame a busy fleet.
   */
  private unservedFeature(model: string, constraints: RouteConstraints): string | undefined {
    const features = constraints.features ?? [];
    if (features.length === 0) return undefined;
    const serving = this.registry.serving(model);
    if (serving.size === 0) return undefined;
    for (const p of serving) if (features.every((f) => p.hasFeature(model, f))) return undefined;
    // The first feature no provider of the model has, as a consumer would understand it.
    const missing = features.find((f) => ![...serving].some((p) => p.hasFeature(model, f)));
    const what =
      missing === ModelFeature.EMBEDDINGS
        ? "computes its embeddings"
        : missing === ModelFeature.LOGPROBS
          ? "reports log-probabilities (logprobs)"
          : missing === ModelFeature.GRAMMAR
            ? "enforces the grammar that response_format and tools need"
            : "has everything this request needs (a grammar and log-probabilities)";
    return `none of its ${serving.size} connected provider${serving.size === 1 ? "" : "s"} ${what}`;
  }

  /** Hands free slots to waiting requests of a model, first come first served. */
  drain(model: string): void {
    const queue = this.queues.get(model);
    if (!queue || queue.length === 0) return;
    let i = 0;
    while (i < queue.length && this.room.count(model) > 0) {
      const waiter = queue[i] as Waiter;
      const p = this.choose(waiter.demand, waiter.constraints);
      if (!p) {
        i++;
        continue;
      }
      queue.splice(i, 1);
      waiter.cleanup();
      const queuedMicros = Math.round((performance.now() - waiter.enqueuedAt) * 1000);
      this.metrics?.queueWait.observe({ model }, queuedMicros / 1e6);
      waiter.resolve(this.lease(p, queuedMicros));
    }
    if (queue.length === 0) this.queues.delete(model);
    this.metrics?.queueDepth.set({ model }, queue.length);
  }

  /** Fails every waiting request (coordinator shutdown). */
  close(error: unknown): void {
    this.unsubscribe();
    for (const queue of this.queues.values()) {
      for (const w of queue.splice(0)) {
        w.cleanup();
        w.reject(error);
      }
    }
    this.queues.clear();
  }

  private dequeue(waiter: Waiter): void {
    waiter.cleanup();
    const queue = this.queues.get(waiter.demand.model);
    if (!queue) return;
    const i = queue.indexOf(waiter);
    if (i >= 0) queue.splice(i, 1);
    if (queue.length === 0) this.queues.delete(waiter.demand.model);
    this.metrics?.queueDepth.set({ model: waiter.demand.model }, queue.length);
  }

  /**
   * A slot on this very provider, now, or undefined when it has none or takes no work: how a
   * replica admits a request another replica routed to a provider whose stream it holds (the
   * other replica's view of its free slots may be stale). Queued local requests are not ahead of
   * it: the forwarding replica chose this provider with a free slot in view.
   */
  leaseOn(p: ProviderHandle): Lease | undefined {
    if (p.closed || p.draining || p.deRouted || p.freeSlots <= 0) return undefined;
    return this.lease(p, 0);
  }

  private lease(p: ProviderHandle, queuedMicros: number): Lease {
    p.reserveSlot();
    this.room.update(p);
    let released = false;
    return {
      provider: p,
      queuedMicros,
      release: () => {
        if (released) return;
        released = true;
        p.releaseSlot();
        this.room.update(p);
        // The freed slot can serve any model the provider has, not only this request's.
        if (!p.closed) for (const m of p.models.keys()) this.drain(m);
      },
    };
  }
}
