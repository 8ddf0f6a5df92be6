import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { HeartbeatSchema, ModelInfoSchema, TrustLevel } from "@darkbloom/protocol/provider/v1";
import { type HandleJudgement, ProviderHandle } from "../routing/provider-handle.js";

let next = 0;

/** A ProviderHandle for routing tests (no stream behind it). */
export function testProvider(
  overrides: Partial<{
    id: string;
    models: string[];
    maxBatch: number;
    contextLength: number;
    decode: number;
    prefill: number;
    trust: TrustLevel;
  }> = {},
): ProviderHandle {
  const p = new ProviderHandle({
    id: overrides.id ?? `p${next++}`,
    machineId: "",
    daemonVersion: "1.0.0",
    engineBackend: "test",
    hardware: undefined,
    models: (overrides.models ?? ["m"]).map((id) =>
      create(ModelInfoSchema, { id, contextLength: overrides.contextLength ?? 8192 }),
    ),
    maxBatch: overrides.maxBatch ?? 4,
    maxContext: 0,
    trustLevel: overrides.trust ?? TrustLevel.NONE,
    connectedAt: Date.now(),
    send: () => true,
  });
  heartbeat(p, {
    decodeTokensPerSecond: overrides.decode ?? 50,
    prefillTokensPerSecond: overrides.prefill ?? 500,
  });
  return p;
}

/**
 * Applies a heartbeat that reports the handle's current live state with `changes` on top, the way a
 * provider's heartbeat reaches it.
 */
export function heartbeat(p: ProviderHandle, changes: MessageInitShape<typeof HeartbeatSchema>): void {
  const hb = create(HeartbeatSchema, {
    state: p.state,
    loadedModels: [...p.loadedModels],
    queueDepth: p.queueDepth,
    busySlots: p.busySlots,
    kvCacheUsage: p.kvCacheUsage,
    decodeTokensPerSecond: p.decodeTokensPerSecond,
    prefillTokensPerSecond: p.prefillTokensPerSecond,
    memoryPressure: p.memoryPressure,
    thermalState: p.thermalState,
    requestsCompleted: p.requestsCompleted,
    requestsFailed: p.requestsFailed,
    ...changes,
  });
  p.applyHeartbeat(hb, Date.now());
}

/** Applies a trust judgement with `changes` on top of the handle's current one. */
export function judge(p: ProviderHandle, changes: Partial<HandleJudgement>): void {
  p.applyJudgement({
    trustLevel: p.trustLevel,
    deRouted: p.deRouted,
    attestedUntil: p.attestedUntil,
    latestChallengePassed: p.latestChallengePassed,
    ...changes,
  });
}

/** Reserves `count` slots, as the router does for dispatches. */
export function occupy(p: ProviderHandle, count: number): void {
  for (let i = 0; i < count; i++) p.reserveSlot();
}
