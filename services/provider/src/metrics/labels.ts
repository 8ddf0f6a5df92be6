import type { ModelLoadEvent } from "../engine/engine.js";
import type { DisconnectReason } from "../link/options.js";

/**
 * The label values the daemon's metrics may take. Every set is bounded: a series lives as long as
 * the process and is served on every scrape, so nothing the coordinator or a consumer sends (model
 * names of requests, request ids, error text) becomes a label value of its own.
 */

/** What any value outside a label's set is recorded as. */
export const OTHER = "other";

export const LOAD_RESULTS: readonly ModelLoadEvent["outcome"][] = ["loaded", "failed", "cancelled"];

export const DISCONNECT_REASONS: readonly DisconnectReason[] = [
  "drained",
  "closed_by_coordinator",
  "error",
  "stopped",
  "rejected",
];

/**
 * The model label: the ids this daemon was configured to serve (its own configuration bounds them),
 * anything else OTHER (a request for a model it does not serve names whatever the sender wrote).
 */
export class ModelLabels {
  private readonly known: ReadonlySet<string>;

  constructor(models: Iterable<string>) {
    this.known = new Set(models);
  }

  get values(): string[] {
    return [...this.known];
  }

  of(model: string): string {
    return this.known.has(model) ? model : OTHER;
  }
}

/** `value` when it is one of `allowed`, else OTHER. */
export function oneOf<T extends string>(allowed: readonly T[], value: string): string {
  return (allowed as readonly string[]).includes(value) ? value : OTHER;
}
