import { trustLevelName } from "@darkbloom/protocol";
import type { Hardware } from "@darkbloom/protocol/provider/v1";
import { acceleratorLabel } from "../fleet-metrics.js";
import { type ProviderTrust, signerName } from "./provider-trust.js";

/**
 * A provider's attestation and how this coordinator judges it, as GET /v1/providers/attestation
 * lists it; the provider directory carries it so that every replica lists the same.
 */
export function attestationView(t: ProviderTrust, now = Date.now()): Record<string, unknown> {
  const h = t.handle;
  const j = t.judgement(now);
  const presented = t.presented;
  const last = t.lastChallenge;
  return {
    provider_id: h.id,
    machine_id: h.machineId,
    daemon_version: h.daemonVersion,
    connected_at: new Date(h.connectedAt).toISOString(),
    trust_level: trustLevelName(j.trustLevel),
    routable: j.routable,
    attested: j.attested,
    reasons: j.reasons.map((r) => ({ code: r.code, message: r.message })),
    signer: signerName(presented?.signer),
    public_key: presented && presented.publicKey.length > 0 ? b64(presented.publicKey) : null,
    attestation:
      presented && presented.blob.length > 0
        ? {
            blob: b64(presented.blob),
            signature: b64(presented.signature),
            verified: t.attestation !== undefined,
            document: t.attestation?.document ?? null,
          }
        : null,
    last_challenge: last
      ? {
          issued_at: new Date(last.issuedAt).toISOString(),
          completed_at: last.completedAt === undefined ? null : new Date(last.completedAt).toISOString(),
          result: last.result,
          reason: last.reason ? { code: last.reason.code, message: last.reason.message } : null,
        }
      : null,
    last_passed_challenge_at: t.lastPassedAt === undefined ? null : new Date(t.lastPassedAt).toISOString(),
    // What the provider says it serves on (the engine's device as its runtime reports it): claimed,
    // not proven, unlike the key and the TPM state.
    hardware: h.hardware ? hardwareView(h.hardware) : null,
    // A TPM signer's state: whether its EK certificate verified and its key was activated, and the
    // boot state of its latest accepted quote (what --tpm-pcr-allow takes).
    tpm: t.tpm
      ? {
          ek_certified: t.tpm.ekCertified,
          activated: t.tpm.activatedKey,
          pcr_digest: t.tpm.pcrDigest ?? null,
        }
      : null,
  };
}

function hardwareView(hw: Hardware): Record<string, unknown> {
  return {
    accelerator: acceleratorLabel(hw.accelerator),
    gpus: hw.gpus.map((g) => ({ name: g.name, memory_bytes: Number(g.memoryBytes) })),
    chip: hw.chip,
    machine_model: hw.machineModel,
    memory_bytes: Number(hw.memoryBytes),
    cpu_cores: hw.cpuCores,
    os: hw.os,
    os_version: hw.osVersion,
  };
}

function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64");
}
