import type { BoxKey } from "@darkbloom/protocol/sealed-box";
import type { CallObserver, InferenceRequestInit } from "../link/provider-session.js";
import type { RouteDemand } from "./cost-model.js";
import type { ProviderHandle } from "./provider-handle.js";
import type { ProviderRegistry } from "./provider-registry.js";
import type { Lease, Router } from "./router.js";
import type { RouteConstraints } from "./scheduler.js";

/**
 * Where a dispatched request goes: the provider's stream on this replica (link/provider-session.ts)
 * or, with forwarding, the replica that holds it (cluster/remote-session.ts). The pipeline seals,
 * verifies and meters alike whichever it is.
 */
export interface DispatchTarget {
  readonly handle: ProviderHandle;
  /** The provider's X25519 key requests are sealed to (empty: none, plaintext dispatch). */
  readonly encryptionKey: Uint8Array;
  /** The P-256 key its response signatures verify with. */
  readonly signingKey: Uint8Array | undefined;
  /**
   * Sends the request; false when it cannot (the stream closed), and then nothing is called. With
   * a `key` every chunk must come back sealed with it; the target wipes the key when the request ends.
   */
  dispatch(request: InferenceRequestInit, observer: CallObserver, key?: BoxKey): boolean;
  /** Stops a request: its observer hears nothing more, and the provider frees the slot. */
  cancel(requestId: string, reason: string): void;
  /** The provider broke a trust rule on the data path: it is told, untrusted and evicted. */
  markUntrusted(code: string, message: string): void;
}

/** The providers the pipeline serves requests with: model lookup, the context gate, routing, dispatch. */
export interface ProviderPool {
  /** Whether any provider serves the model (else the catalog decides between 404 and waiting). */
  serves(model: string): boolean;
  /** The largest context any provider of the model serves. */
  contextLimit(model: string): number;
  /** Whether some provider could ever serve this demand (capacity aside). */
  hasEligibleProvider(demand: RouteDemand, constraints: RouteConstraints): boolean;
  /** A slot on the cheapest provider, waiting in the model's queue if none is free. */
  acquire(demand: RouteDemand, constraints: RouteConstraints, signal?: AbortSignal): Promise<Lease>;
  /** Where to dispatch on a leased provider; undefined when it went away meanwhile. */
  target(provider: ProviderHandle): DispatchTarget | undefined;
}

/** This replica's own provider streams only (a single coordinator, or forwarding switched off). */
export class LocalProviderPool implements ProviderPool {
  constructor(
    readonly registry: ProviderRegistry,
    readonly router: Router,
    private readonly sessions: { get(providerId: string): DispatchTarget | undefined },
  ) {}

  serves(model: string): boolean {
    return this.registry.serving(model).size > 0;
  }

  contextLimit(model: string): number {
    return this.registry.contextLimit(model);
  }

  hasEligibleProvider(demand: RouteDemand, constraints: RouteConstraints): boolean {
    return this.router.hasEligibleProvider(demand, constraints);
  }

  acquire(demand: RouteDemand, constraints: RouteConstraints, signal?: AbortSignal): Promise<Lease> {
    return this.router.acquire(demand, constraints, signal);
  }

  target(provider: ProviderHandle): DispatchTarget | undefined {
    return this.sessions.get(provider.id);
  }
}
