import { fromBase64, sameBytes } from "./response-record.js";

/**
 * The key a coordinator publishes for a provider (GET /v1/providers/attestation, which lists the
 * connected providers), read the one way both `darkbloom verify --coordinator` and the console's
 * playground pin a response's key with. Portable: no Node API.
 */

export type PublishedKey =
  | { kind: "listed"; key: string | null; trustLevel: string }
  | { kind: "unknown"; why: string };

/** The provider's entry in the attestation list's body, as `url` answered it. */
export function readPublishedKey(body: unknown, providerId: string, url: string): PublishedKey {
  const data = (body as { data?: unknown } | null)?.data;
  if (!Array.isArray(data)) return { kind: "unknown", why: `${url} answered without a provider list` };
  const entry = (data as Array<Record<string, unknown> | null>).find((p) => p?.provider_id === providerId);
  if (!entry) {
    return {
      kind: "unknown",
      why: `the coordinator does not publish provider ${providerId} (it lists connected providers only)`,
    };
  }
  const key = typeof entry.public_key === "string" && entry.public_key !== "" ? entry.public_key : null;
  const trustLevel = typeof entry.trust_level === "string" ? entry.trust_level : "unknown";
  return { kind: "listed", key, trustLevel };
}

/** Whether a response's signing key is the published one (both base64; the same bytes). */
export function isPublishedKey(published: string, signingKey: string | null): boolean {
  if (signingKey === null) return false;
  try {
    return sameBytes(fromBase64(published), fromBase64(signingKey));
  } catch {
    return false;
  }
}
