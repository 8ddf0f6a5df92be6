import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { trustLevelName } from "@darkbloom/protocol";
import { ProviderState } from "@darkbloom/protocol/provider/v1";
import type { SessionManager } from "../link/session-manager.js";
import type { ProviderRegistry } from "../routing/provider-registry.js";
import type { TrustManager } from "../trust/trust-manager.js";
import type { ProviderDirectory, ProviderSummaryInit } from "./provider-directory.js";

/** How long a drained provider may take to finish its in-flight work. */
const DRAIN_DEADLINE_MS = 30_000;

const STATE_NAMES: Record<ProviderState, string> = {
  [ProviderState.UNSPECIFIED]: "idle",
  [ProviderState.IDLE]: "idle",
  [ProviderState.SERVING]: "serving",
  [ProviderState.DRAINING]: "draining",
};

/** The admin service's view of the connected fleet, read from the live registry. */
export class LiveProviderDirectory implements ProviderDirectory {
  constructor(
    private readonly registry: ProviderRegistry,
    private readonly sessions: SessionManager,
    private readonly trust?: TrustManager,
  ) {}

  list(model?: string): ProviderSummaryInit[] {
    const providers = model ? [...this.registry.serving(model)] : [...this.registry.all()];
    const now = Date.now();
    return providers
      .sort((a, b) => a.id.localeCompare(b.id))
      .map((p) => {
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
        };
      });
  }

  drain(providerId: string, reason: string): boolean {
    const session = this.sessions.get(providerId);
    if (!session) return false;
    session.drain(reason, DRAIN_DEADLINE_MS);
    return true;
  }
}
