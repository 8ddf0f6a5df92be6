import { trustLevelName } from "@darkbloom/protocol";
import { AcceleratorKind } from "@darkbloom/protocol/provider/v1";
import { Gauge, type Registry } from "prom-client";
import { type ModelLabels, OTHER } from "./metric-labels.js";
import type { ProviderHandle } from "./routing/provider-handle.js";

/**
 * What the fleet gauges read at scrape time: this replica's own providers (the streams it holds; the
 * ones other replicas hold are theirs to report, so a `sum` over replicas counts each machine once)
 * and the rates this replica measured.
 */
export interface FleetSource {
  providers(): Iterable<ProviderHandle>;
  /**
   * The single-row rates (tokens/s) this replica measured, by model: of every provider it dispatched
   * to, its own or (forwarded) another replica's.
   */
  measuredRates(kind: "decode" | "prefill"): Iterable<[model: string, rate: number]>;
}

/** Valid semantic versions a daemon may report, as a label (the rest are "other"). */
const VERSION = /^\d{1,4}\.\d{1,4}\.\d{1,6}(?:-[0-9A-Za-z.-]{1,32})?$/;

/**
 * The daemon-version label. A version is whatever the daemon says (a claim: what it runs is checked
 * by its attested binary hash, not by this), so only well-formed versions are labelled, up to
 * `limit` distinct ones over the process's life; a stranger cycling through made-up versions fills
 * the budget and then lands in "other", never in a new series.
 */
export class VersionLabels {
  private readonly admitted = new Set<string>();

  constructor(readonly limit = 32) {}

  label(version: string): string {
    if (this.admitted.has(version)) return version;
    if (!VERSION.test(version) || this.admitted.size >= this.limit) return OTHER;
    this.admitted.add(version);
    return version;
  }
}

const ACCELERATORS: Record<AcceleratorKind, string> = {
  [AcceleratorKind.UNSPECIFIED]: "unspecified",
  [AcceleratorKind.CPU]: "cpu",
  [AcceleratorKind.METAL]: "metal",
  [AcceleratorKind.CUDA]: "cuda",
  [AcceleratorKind.VULKAN]: "vulkan",
};

/** The accelerator label: the enum's names (a value this build does not know is "other"). */
export function acceleratorLabel(kind: AcceleratorKind | undefined): string {
  return kind === undefined ? "unspecified" : (ACCELERATORS[kind] ?? OTHER);
}

/**
 * How routing sees a provider now: "routable" (takes new work), "draining" (finishing what it has:
 * asked to drain or draining by its own account) or "derouted" (below the minimum version, or caught
 * misbehaving).
 */
export function routingStatus(p: ProviderHandle): "routable" | "draining" | "derouted" {
  if (p.deRouted) return "derouted";
  if (p.draining || p.closed) return "draining";
  return "routable";
}

/** Sums per label set, written into a gauge on each scrape (series of departed labels vanish). */
class Tally {
  private readonly sums = new Map<string, { labels: Record<string, string>; value: number; n: number }>();

  add(labels: Record<string, string>, value: number): void {
    const key = JSON.stringify(labels);
    const entry = this.sums.get(key);
    if (entry) {
      entry.value += value;
      entry.n++;
    } else this.sums.set(key, { labels, value, n: 1 });
  }

  writeSums(gauge: Gauge<string>): void {
    gauge.reset();
    for (const { labels, value } of this.sums.values()) gauge.set(labels, value);
  }

  writeMeans(gauge: Gauge<string>): void {
    gauge.reset();
    for (const { labels, value, n } of this.sums.values()) gauge.set(labels, value / n);
  }
}

/**
 * The gauges a fleet is run on, computed from the registry at each scrape rather than kept up to date
 * on every event: a scrape every 15 s costs one pass over this replica's providers, and nothing can
 * drift. Model labels go through the process's model budget (ModelLabels); models past it are summed
 * as "other" (for the rate and KV gauges: averaged).
 */
export function registerFleetMetrics(
  registry: Registry,
  models: ModelLabels,
  source: () => FleetSource | undefined,
  versions = new VersionLabels(),
): void {
  const registers = [registry];
  new Gauge({
    name: "darkbloom_model_providers",
    help:
      "Providers whose stream this replica holds, by model they serve and routing status (routable, " +
      "draining, derouted). A provider serving several models counts once under each.",
    labelNames: ["model", "status"] as const,
    registers,
    collect() {
      const fleet = source();
      const tally = new Tally();
      for (const p of fleet?.providers() ?? []) {
        const status = routingStatus(p);
        for (const model of p.models.keys()) tally.add({ model: models.label(model), status }, 1);
      }
      tally.writeSums(this);
    },
  });
  new Gauge({
    name: "darkbloom_model_slots",
    help:
      "Batch slots of the providers serving a model, by state: busy (requests the coordinator has " +
      "dispatched and not seen finish) or free (what routable providers can still take). Counted by " +
      "the coordinator, not reported by providers; a provider serving several models counts under each.",
    labelNames: ["model", "state"] as const,
    registers,
    collect() {
      const fleet = source();
      const tally = new Tally();
      for (const p of fleet?.providers() ?? []) {
        const free = routingStatus(p) === "routable" ? Math.max(0, p.freeSlots) : 0;
        const busy = Math.max(0, p.maxBatch - Math.max(0, p.freeSlots));
        for (const model of p.models.keys()) {
          const label = models.label(model);
          tally.add({ model: label, state: "busy" }, busy);
          tally.add({ model: label, state: "free" }, free);
        }
      }
      tally.writeSums(this);
    },
  });
  new Gauge({
    name: "darkbloom_model_kv_cache_usage_ratio",
    help:
      "Mean KV-cache use (0..1) of the providers that have a model loaded, as their heartbeats report " +
      "it (a provider's claim, clamped to 0..1; routing does not rely on it).",
    labelNames: ["model"] as const,
    registers,
    collect() {
      const fleet = source();
      const tally = new Tally();
      for (const p of fleet?.providers() ?? []) {
        const usage = Number.isFinite(p.kvCacheUsage) ? Math.min(1, Math.max(0, p.kvCacheUsage)) : 0;
        for (const model of p.loadedModels) {
          if (p.models.has(model)) tally.add({ model: models.label(model) }, usage);
        }
      }
      tally.writeMeans(this);
    },
  });
  for (const kind of ["decode", "prefill"] as const) {
    new Gauge({
      name: `darkbloom_model_${kind}_tokens_per_second`,
      help:
        `The ${kind} rate of one request row this replica measured for a model, over every provider ` +
        "it dispatched to (decayed mean over about 10 minutes of its own timings and the usage it " +
        "accepted; providers' advertised rates are not used). Absent until a request completed.",
      labelNames: ["model"] as const,
      registers,
      collect() {
        const tally = new Tally();
        for (const [model, rate] of source()?.measuredRates(kind) ?? []) {
          if (Number.isFinite(rate)) tally.add({ model: models.label(model) }, rate);
        }
        tally.writeMeans(this);
      },
    });
  }
  new Gauge({
    name: "darkbloom_providers",
    help:
      "Providers whose stream this replica holds, by daemon version (as reported; well-formed versions " +
      "up to a budget, else other), the trust level granted now, and the accelerator they registered.",
    labelNames: ["version", "trust", "accelerator"] as const,
    registers,
    collect() {
      const fleet = source();
      const tally = new Tally();
      for (const p of fleet?.providers() ?? []) {
        tally.add(
          {
            version: versions.label(p.daemonVersion),
            trust: trustLevelName(p.trustLevel),
            accelerator: acceleratorLabel(p.hardware?.accelerator),
          },
          1,
        );
      }
      tally.writeSums(this);
    },
  });
}
