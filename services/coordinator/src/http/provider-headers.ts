import { trustLevelName } from "@darkbloom/protocol";
import type { ProviderHandle } from "../routing/provider-handle.js";

/** X-Provider-* headers naming the provider that serves a response. */
export function providerHeaders(p: ProviderHandle | undefined): Record<string, string> {
  if (!p) return {};
  return {
    "X-Provider-Id": p.id,
    "X-Provider-Trust-Level": trustLevelName(p.trustLevel),
    // No challenge has been passed until attestation verification exists.
    "X-Provider-Attested": "false",
  };
}
