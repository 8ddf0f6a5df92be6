import { create } from "@bufbuild/protobuf";
import { ModelInfoSchema, TrustLevel } from "@darkbloom/protocol/provider/v1";
import { ProviderHandle } from "./provider-handle.js";

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
  p.decodeTokensPerSecond = overrides.decode ?? 50;
  p.prefillTokensPerSecond = overrides.prefill ?? 500;
  return p;
}
