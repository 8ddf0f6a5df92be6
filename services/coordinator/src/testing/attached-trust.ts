import type {
  AttestationChallenge,
  ConnectResponse,
  Register,
  RuntimeStatus,
} from "@darkbloom/protocol/provider/v1";
import { TrustLevel } from "@darkbloom/protocol/provider/v1";
import { ProviderHandle } from "../routing/provider-handle.js";
import type { ProviderTrust } from "../trust/provider-trust.js";
import type { TrustManager } from "../trust/trust-manager.js";

/** A provider session's trust, attached to a TrustManager without a stream: what it was sent. */
export interface AttachedTrust {
  trust: ProviderTrust;
  handle: ProviderHandle;
  sent: ConnectResponse[];
  statuses(): RuntimeStatus[];
  challenges(): AttestationChallenge[];
  lastStatus(): RuntimeStatus | undefined;
}

let next = 0;

/** Attaches `register` to `manager` as a session would and starts its challenges. */
export function attachTrust(manager: TrustManager, register: Register): AttachedTrust {
  const sent: ConnectResponse[] = [];
  const handle = new ProviderHandle({
    id: `prov_${next++}`,
    machineId: register.machineId,
    daemonVersion: register.daemonVersion,
    engineBackend: "test",
    hardware: undefined,
    models: register.models,
    maxBatch: 2,
    maxContext: 0,
    trustLevel: TrustLevel.NONE,
    connectedAt: Date.now(),
    send: () => true,
  });
  const trust = manager.attach(
    handle,
    register,
    (msg) => {
      sent.push(msg);
      return true;
    },
    () => undefined,
  );
  trust.start();
  const statuses = () => sent.flatMap((s) => (s.message.case === "runtimeStatus" ? [s.message.value] : []));
  return {
    trust,
    handle,
    sent,
    statuses,
    lastStatus: () => statuses().at(-1),
    challenges: () =>
      sent.flatMap((s) => (s.message.case === "attestationChallenge" ? [s.message.value] : [])),
  };
}
