import { MeteringViolation } from "./billing/usage-meter.js";
import { ResponseViolation } from "./inference/response-verification.js";
import { EncryptionViolation } from "./link/provider-session.js";
import { TrustCode } from "./trust/reasons.js";

/**
 * Label values of the Prometheus metrics. Every series lives as long as the process and is served on
 * every scrape, so a label may only take values from a bounded set: a value outside it is reported
 * under a fixed bucket ("other"), never verbatim. Strings a consumer or a provider chose (a model
 * name on a 404, an error code in an InferenceError, an administrator's drain reason) would otherwise
 * each add a series forever.
 */

/** The bucket of every value outside a label's set. */
export const OTHER = "other";
/** The model label of a request that named no model (refused before its body was read). */
export const NO_MODEL = "-";

/** Maps a value to itself when it is in `values`, else to OTHER. */
export function oneOf(values: Iterable<string>): (value: string) => string {
  const set = new Set(values);
  return (value) => (set.has(value) ? value : OTHER);
}

/** An HTTP status code (the coordinator's own, or 499 for a consumer that went away). */
export function statusLabel(value: string): string {
  return /^[1-5]\d\d$/.test(value) ? value : OTHER;
}

/**
 * Why a request was retried elsewhere or a provider was evicted: the coordinator's own reasons, the
 * trust codes, and the error codes the daemon is known to send. A provider's InferenceError code is
 * whatever it chose to write, so unknown codes collapse into OTHER.
 */
const REASONS = new Set<string>([
  // The coordinator's own.
  "stream_closed",
  "stream_error",
  "protocol_error",
  "protocol_violation",
  "provider_untrusted",
  "replaced_by_new_session",
  "coordinator_shutdown",
  "missed_heartbeats",
  "first_token_timeout",
  "provider_stalled",
  "bad_encryption_key",
  // Trust reason codes (a provider marked untrusted is evicted with its code).
  ...Object.values(TrustCode),
  ...Object.values(ResponseViolation),
  ...Object.values(EncryptionViolation),
  ...Object.values(MeteringViolation),
  // InferenceError codes of the darkbloom daemon.
  "provider_error",
  "provider_draining",
  "provider_shutting_down",
  "encryption_required",
  "decryption_failed",
  "signing_failed",
  "generation_cancelled",
  "invalid_request_error",
  "model_not_found",
  "model_not_available",
  "context_length_exceeded",
]);

/** Reasons carrying a detail after a colon ("protocol violation: <why>") are labelled by their kind. */
const REASON_PREFIXES: readonly [string, string][] = [
  ["protocol violation:", "protocol_violation"],
  ["provider untrusted:", "provider_untrusted"],
];

export function reasonLabel(value: string): string {
  if (REASONS.has(value)) return value;
  for (const [prefix, label] of REASON_PREFIXES) if (value.startsWith(prefix)) return label;
  return OTHER;
}

/** Where a model name comes from, as far as metrics are concerned. */
export type ModelOrigin = "catalog" | "served";

/**
 * The model label: a model the catalog lists (the operator's own set) or that a connected provider
 * serves, up to `limit` distinct names over the process's life; anything else is OTHER. Models only
 * providers vouch for (not in the catalog) may take at most half the budget, so a provider that
 * advertises made-up ids cannot crowd out the catalog's models.
 */
export class ModelLabels {
  private readonly admitted = new Set<string>();
  private uncatalogued = 0;

  constructor(
    private readonly originOf: (model: string) => ModelOrigin | undefined,
    readonly limit: number,
  ) {}

  label(model: string): string {
    if (model === "" || model === NO_MODEL) return NO_MODEL;
    if (this.admitted.has(model)) return model;
    const origin = this.originOf(model);
    if (origin === undefined || this.admitted.size >= this.limit) return OTHER;
    if (origin === "served") {
      if (this.uncatalogued >= Math.floor(this.limit / 2)) return OTHER;
      this.uncatalogued++;
    }
    this.admitted.add(model);
    return model;
  }
}
