import { createHash } from "node:crypto";
import type { Coordinator } from "../../../api/v1alpha1/coordinator-types.js";
import { coordinatorEnv } from "./config-env.js";
import { serveArgs } from "./deployment.js";
import { peerSecretName } from "./peer-secret.js";

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** JSON with object keys sorted, so that equal values hash equally whatever their key order. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * The pod template's `darkbloom.dev/config-hash`: 16 hex digits of a SHA-256 over everything that
 * must restart the replicas when it changes: the image, the args and env, the TLS Secret's name
 * (which Secret is mounted), and `secretsVersion`, the controller's digest of the referenced
 * Secrets' values. The Secrets reach the pods through secretKeyRef, which a pod reads only when it
 * starts: without this a rotated database password or admin key would not reach running replicas.
 * The TLS Secret's content is left out on purpose: its volume is updated in place and the
 * coordinator reloads the certificate, so a renewal (cert-manager's, every few weeks) must not roll
 * the pods.
 */
export function buildConfigHash(
  coordinator: Coordinator,
  secretsVersion: string,
  options: { previousPeerToken?: boolean | undefined } = {},
): string {
  const input = {
    image: coordinator.spec.image,
    args: serveArgs(coordinator),
    env: coordinatorEnv(coordinator, {
      peerSecretName: peerSecretName(coordinator),
      previousPeerToken: options.previousPeerToken,
    }),
    // Absent without TLS: the hash of a Coordinator without it is what it was before the field.
    // (serverName is the operator's own business: the pods do not read it.)
    tlsSecret: coordinator.spec.tls?.secretName,
    // Which ConfigMap and key are mounted (the bundle's content is re-read by the coordinator).
    tpmEkCa: coordinator.spec.tpm && [
      coordinator.spec.tpm.ekCaConfigMap,
      coordinator.spec.tpm.ekCaKey ?? "ca.pem",
    ],
    secretsVersion,
  };
  return sha256Hex(canonicalJson(input)).slice(0, 16);
}
