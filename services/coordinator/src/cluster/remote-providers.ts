import { create } from "@bufbuild/protobuf";
import { parseTrustLevelName } from "@darkbloom/protocol";
import { ModelInfoSchema, TrustLevel } from "@darkbloom/protocol/provider/v1";
import type { Logger } from "../log.js";
import { ProviderHandle } from "../routing/provider-handle.js";
import type { PerformanceBook } from "../routing/provider-performance.js";
import { ProviderRegistry } from "../routing/provider-registry.js";
import { Router, type RouterOptions } from "../routing/router.js";
import type { DirectoryEntry } from "./directory-row.js";
import type { PeerClients } from "./peer-clients.js";
import type { ForwardObserver } from "./peer-service.js";
import { RemoteProviderSession } from "./remote-session.js";

/**
 * The providers other replicas hold, mirrored from the provider directory into a registry and a
 * router of their own, so that routing scores them as it scores this replica's (measured
 * performance is kept per machine in this replica's book, whichever replica holds the machine's
 * stream). Each is dispatched to through a RemoteProviderSession. A provider whose identity changes
 * (keys, models, capacity, holder) is replaced; one that leaves the directory ends its forwarded
 * calls, which fail over like a dropped provider's.
 */
export class RemoteProviders {
  readonly registry = new ProviderRegistry();
  readonly router: Router;
  private readonly remote = new Map<string, { session: RemoteProviderSession; identity: string }>();

  constructor(
    private readonly peers: PeerClients,
    /** This replica's book of measured behaviour per machine. */
    private readonly performance: PerformanceBook,
    routerOptions: RouterOptions,
    private readonly log: Logger,
    /** Hears each request forwarded to another replica, admitted or refused (metrics). */
    private readonly onForward?: ForwardObserver,
  ) {
    // No metrics: the queue-depth gauge is the local router's (a request waiting for a slot waits in
    // both queues; two writers of one gauge would make it flap).
    this.router = new Router(this.registry, routerOptions);
  }

  /** Follows a read of the directory (the other replicas' rows). */
  sync(entries: readonly DirectoryEntry[]): void {
    const seen = new Set<string>();
    for (const entry of entries) {
      const dispatch = entry.dispatch;
      if (!dispatch || entry.models.length === 0) continue;
      seen.add(entry.providerId);
      const identity = JSON.stringify([
        entry.advertiseUrl,
        entry.machineId,
        entry.models,
        entry.maxBatch,
        dispatch.encryptionKey,
        dispatch.signingKey,
        dispatch.usageVersion,
        dispatch.payoutAccount,
      ]);
      let known = this.remote.get(entry.providerId);
      if (known && known.identity !== identity) {
        this.drop(entry.providerId, "the provider's registration changed");
        known = undefined;
      }
      if (!known) {
        const handle = new ProviderHandle({
          id: entry.providerId,
          machineId: entry.machineId,
          daemonVersion: entry.daemonVersion,
          usageVersion: dispatch.usageVersion,
          engineBackend: "",
          hardware: undefined,
          models: entry.models.map((m) =>
            create(ModelInfoSchema, { id: m.id, contextLength: m.contextLength, features: m.features ?? [] }),
          ),
          maxBatch: entry.maxBatch,
          maxContext: 0,
          trustLevel: TrustLevel.NONE,
          connectedAt: entry.connectedAt,
          performance: this.performance.of(entry.machineId || entry.providerId),
          // Control messages go to a provider through the replica that holds it, never from here.
          send: () => false,
          encryptionKey: Buffer.from(dispatch.encryptionKey, "hex"),
          signingKey: dispatch.signingKey === "" ? undefined : Buffer.from(dispatch.signingKey, "hex"),
          // Whom a request it serves through this replica pays (settled here).
          ...(dispatch.payoutAccount ? { payoutAccount: dispatch.payoutAccount } : {}),
        });
        known = {
          session: new RemoteProviderSession(
            handle,
            this.peers.of(entry.advertiseUrl),
            this.log,
            this.onForward,
          ),
          identity,
        };
        this.remote.set(entry.providerId, known);
        this.apply(handle, entry);
        this.registry.add(handle);
        continue;
      }
      this.apply(known.session.handle, entry);
      this.registry.capacityChanged(known.session.handle);
    }
    for (const id of [...this.remote.keys()])
      if (!seen.has(id)) this.drop(id, "the provider left the directory");
  }

  /** The session of a remote provider. */
  target(providerId: string): RemoteProviderSession | undefined {
    return this.remote.get(providerId)?.session;
  }

  /** Ends every forwarded call and rejects the requests waiting for a remote slot with `error`. */
  close(error: unknown): void {
    this.router.close(error);
    for (const id of [...this.remote.keys()]) this.drop(id, "coordinator_shutdown");
  }

  /** The holder's judgement and load, as the directory last recorded them. */
  private apply(handle: ProviderHandle, entry: DirectoryEntry): void {
    handle.applyJudgement({
      trustLevel: parseTrustLevelName(entry.trustLevel) ?? TrustLevel.NONE,
      deRouted: !entry.routable,
      // The holder rewrites the row when its challenge goes stale: the flag is as fresh as the row.
      attestedUntil: entry.attested ? Number.MAX_SAFE_INTEGER : 0,
      latestChallengePassed: entry.attested,
    });
    if (entry.draining && !handle.draining) handle.markDraining();
    // Routing prefers providers with the model loaded: a remote one's come with its row.
    if (entry.dispatch) handle.setLoadedModels(entry.dispatch.loadedModels);
    handle.setExternalLoad(entry.maxBatch - entry.freeSlots - handle.inFlight);
  }

  private drop(providerId: string, reason: string): void {
    const known = this.remote.get(providerId);
    if (!known) return;
    this.remote.delete(providerId);
    this.registry.remove(providerId, reason);
    known.session.close(reason);
  }
}
