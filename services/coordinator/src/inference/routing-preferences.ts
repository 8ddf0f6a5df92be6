import { parseTrustLevelName, TRUST_LEVEL_NAMES } from "@darkbloom/protocol";
import type { TrustLevel } from "@darkbloom/protocol/provider/v1";
import { invalidRequest } from "../errors/index.js";

/** A consumer's optional limits on which providers may serve a request (SPEC section 4). */
export interface RoutingPreferences {
  minTrust?: TrustLevel | undefined;
  allow?: ReadonlySet<string> | undefined;
  exclude?: ReadonlySet<string> | undefined;
}

export const PREFERENCE_HEADERS = {
  minTrust: "x-darkbloom-min-trust-level",
  allow: "x-darkbloom-providers",
  exclude: "x-darkbloom-exclude-providers",
} as const;

const PROVIDER_ID = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_LISTED = 64;

type HeaderValue = string | string[] | undefined;

/** Reads the preference headers; a malformed one is a 400 naming the header. */
export function readRoutingPreferences(get: (name: string) => HeaderValue): RoutingPreferences {
  const prefs: RoutingPreferences = {};
  const trust = single(get(PREFERENCE_HEADERS.minTrust));
  if (trust !== undefined) {
    prefs.minTrust = parseTrustLevelName(trust.trim());
    if (prefs.minTrust === undefined) {
      throw invalidRequest(
        `${PREFERENCE_HEADERS.minTrust} must be one of ${TRUST_LEVEL_NAMES.join(", ")}; got ${JSON.stringify(trust)}.`,
        PREFERENCE_HEADERS.minTrust,
      );
    }
  }
  prefs.allow = providerList(get(PREFERENCE_HEADERS.allow), PREFERENCE_HEADERS.allow);
  prefs.exclude = providerList(get(PREFERENCE_HEADERS.exclude), PREFERENCE_HEADERS.exclude);
  return prefs;
}

function single(v: HeaderValue): string | undefined {
  return Array.isArray(v) ? v.join(",") : v;
}

function providerList(v: HeaderValue, header: string): ReadonlySet<string> | undefined {
  const raw = single(v);
  if (raw === undefined) return undefined;
  const ids = raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  if (ids.length === 0 || ids.length > MAX_LISTED || !ids.every((id) => PROVIDER_ID.test(id))) {
    throw invalidRequest(
      `${header} must be a comma-separated list of 1 to ${MAX_LISTED} provider ids.`,
      header,
    );
  }
  return new Set(ids);
}
