import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { trustLevelName } from "@darkbloom/protocol";
import { ProviderState } from "@darkbloom/protocol/provider/v1";
import type { ClusterProviders } from "../cluster/cluster-view.js";
import type { DirectoryEntry } from "../cluster/directory-row.js";
import type { PeerClient, PeerClients } from "../cluster/peer-clients.js";
import type { ModelPlacement } from "../link/model-placement.js";
import {
  DRAIN_DEADLINE_MS,
  type ModelOperationOutcome,
  runModelOperation,
} from "../link/provider-commands.js";
import type { SessionManager } from "../link/session-manager.js";
import type { ProviderRegistry } from "../routing/provider-registry.js";
import type { TrustManager } from "../trust/trust-manager.js";
import type { ProviderDirectory, ProviderSummaryInit } from "./provider-directory.js";

const STATE_NAMES: Record<ProviderState, string> = {
  [ProviderState.UNSPECIFIED]: "idle",
  [ProviderState.IDLE]: "idle",
  [ProviderState.SERVING]: "serving",
  [ProviderState.DRAINING]: "draining",
};

/**
 * The admin service's view of the connected fleet: this replica's providers read from the live
 * registry, the other replicas' from the provider directory (what it records: no decode rate, and
 * the row's last write as the last heartbeat). A drain of another replica's provider goes through
 * that replica (PeerService.Drain).
 */
export class LiveProviderDirectory implements ProviderDirectory {
  constructor(
    private readonly registry: ProviderRegistry,
    private readonly sessions: SessionManager,
    private readonly trust?: TrustManager,
    private readonly cluster?: ClusterProviders,
    /** Clients of the other replicas (with a peer token): a drain reaches their providers. */
    private readonly peers?: PeerClients,
    /** Loads and unloads models (model placement's cooldown counts an administrator's commands). */
    private readonly models: Pick<ModelPlacement, "operate"> = { operate: runModelOperation },
  ) {}

  list(model?: string): ProviderSummaryInit[] {
    const providers = model ? [...this.registry.serving(model)] : [...this.registry.all()];
    const now = Date.now();
    const remote = (this.cluster?.remote() ?? [])
      .filter((e) => model === undefined || e.models.some((m) => m.id === model))
      .map(remoteSummary);
    const local = providers.map((p): ProviderSummaryInit => {
      const judgement = this.trust?.get(p.id)?.judgement(now);
      return {
        providerId: p.id,
        machineId: p.machineId,
        daemonVersion: p.daemonVersion,
        models: [...p.models.keys()],
        trustLevel: trustLevelName(p.trustLevel),
        state: p.draining ? "draining" : STATE_NAMES[p.state],
        maxBatch: p.maxBatch,
        busySlots: p.inFlight,
        decodeTokensPerSecond: p.decodeTokensPerSecond,
        connectedAt: timestampFromMs(p.connectedAt),
        lastHeartbeatAt: timestampFromMs(p.lastHeartbeatAt),
        chip: p.hardware?.chip ?? "",
        routable: judgement?.routable ?? !p.deRouted,
        trustReasons: judgement?.reasons.map((r) => r.code) ?? [],
        loadedModels: [...p.loadedModels].sort(),
      };
    });
    // Code-unit order, as the directory and the attestation list sort.
    return [...local, ...remote].sort((a, b) => {
      const x = a.providerId ?? "";
      const y = b.providerId ?? "";
      return x < y ? -1 : x > y ? 1 : 0;
    });
  }

  async drain(providerId: string, reason: string): Promise<boolean> {
    const session = this.sessions.get(providerId);
    if (session) {
      session.drain(reason, DRAIN_DEADLINE_MS);
      return true;
    }
    const done = await this.throughHolder(providerId, "drain it", (peer) =>
      peer.drain({ providerId, reason }),
    );
    return done !== undefined;
  }

  async modelOperation(
    providerId: string,
    modelId: string,
    kind: "load" | "unload",
  ): Promise<ModelOperationOutcome | undefined> {
    const session = this.sessions.get(providerId);
    if (session) return this.models.operate(session, modelId, kind);
    const response = await this.throughHolder(providerId, `${kind} it`, (peer) =>
      peer.modelOperation({ providerId, modelId, unload: kind === "unload" }),
    );
    return response && { succeeded: response.succeeded, reason: response.reason };
  }

  /**
   * A call to the replica holding another replica's provider (only it holds the stream); undefined
   * when no replica holds one with this id (or it left meanwhile).
   */
  private async throughHolder<T>(
    providerId: string,
    what: string,
    call: (peer: PeerClient) => Promise<T>,
  ): Promise<T | undefined> {
    const holder = this.cluster?.remote().find((e) => e.providerId === providerId);
    if (!holder) return undefined;
    const where = `provider ${providerId} is connected to the coordinator at ${holder.advertiseUrl}`;
    if (!this.peers) {
      throw new ConnectError(`${where}; ${what} there (this one has no peer token)`, Code.FailedPrecondition);
    }
    try {
      return await call(this.peers.of(holder.advertiseUrl));
    } catch (e) {
      const err = ConnectError.from(e);
      if (err.code === Code.NotFound) return undefined; // it left meanwhile
      throw new ConnectError(`${where}, which did not answer: ${err.rawMessage}`, Code.FailedPrecondition);
    }
  }
}

function remoteSummary(e: DirectoryEntry): ProviderSummaryInit {
  const busy = Math.max(0, e.maxBatch - e.freeSlots);
  return {
    providerId: e.providerId,
    machineId: e.machineId,
    daemonVersion: e.daemonVersion,
    models: e.models.map((m) => m.id),
    trustLevel: e.trustLevel,
    state: e.draining ? "draining" : busy > 0 ? "serving" : "idle",
    maxBatch: e.maxBatch,
    busySlots: busy,
    decodeTokensPerSecond: 0,
    connectedAt: timestampFromMs(e.connectedAt),
    lastHeartbeatAt: timestampFromMs(e.updatedAt),
    chip: e.chip,
    routable: e.routable,
    trustReasons: e.trustReasons,
    loadedModels: e.dispatch?.loadedModels ?? [],
  };
}
