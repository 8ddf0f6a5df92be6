import { trustLevelName } from "@darkbloom/protocol";
import type { ProviderHandle } from "../routing/provider-handle.js";

/** X-Provider-* headers naming the provider that serves a response. */
export function providerHeaders(p: ProviderHandle | undefined): Record<string, string> {
  if (!p) return {};
  return {
    "X-Provider-Id": p.id,
    "X-Provider-Trust-Level": trustLevelName(p.trustLevel),
    // True when the provider's latest challenge passed and is still fresh.
    "X-Provider-Attested": p.attested() ? "true" : "false",
  };
}
