import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { type FleetSource, registerFleetMetrics } from "./fleet-metrics.js";
import { ModelLabels, type ModelOrigin, OTHER, oneOf, reasonLabel, statusLabel } from "./metric-labels.js";

/** Maps each label's value into its bounded set (see metric-labels.ts). */
type Bounds<L extends string> = Record<L, (value: string) => string>;

function bounded<L extends string>(bounds: Bounds<L>, labels: Record<L, string>): Record<L, string> {
  const out = {} as Record<L, string>;
  for (const name of Object.keys(bounds) as L[]) out[name] = bounds[name](labels[name]);
  return out;
}

/** A counter whose label values pass through their bounds first. */
export class BoundedCounter<L extends string> {
  constructor(
    private readonly counter: Counter<L>,
    private readonly bounds: Bounds<L>,
  ) {}

  inc(labels: Record<L, string>, value = 1): void {
    this.counter.inc(bounded(this.bounds, labels), value);
  }
}

/** A histogram whose label values pass through their bounds first. */
export class BoundedHistogram<L extends string> {
  constructor(
    private readonly histogram: Histogram<L>,
    private readonly bounds: Bounds<L>,
  ) {}

  observe(labels: Record<L, string>, value: number): void {
    this.histogram.observe(bounded(this.bounds, labels), value);
  }
}

/**
 * A gauge whose label values pass through their bounds first. Several values collapsed into one
 * series (OTHER) would overwrite each other's level, so such a series reports their sum.
 */
export class BoundedGauge<L extends string> {
  /** The level of each raw label set whose series is a collapsed one, by that series. */
  private readonly collapsed = new Map<string, Map<string, number>>();

  constructor(
    private readonly gauge: Gauge<L>,
    private readonly bounds: Bounds<L>,
  ) {}

  set(labels: Record<L, string>, value: number): void {
    const series = bounded(this.bounds, labels);
    const names = Object.keys(this.bounds) as L[];
    if (names.every((n) => series[n] === labels[n])) {
      this.gauge.set(series, value);
      return;
    }
    const key = JSON.stringify(series);
    const levels = this.collapsed.get(key) ?? new Map<string, number>();
    const raw = JSON.stringify(names.map((n) => labels[n]));
    // Zero levels are dropped, so the map holds only what is non-zero now (bounded by live work).
    if (value === 0) levels.delete(raw);
    else levels.set(raw, value);
    if (levels.size === 0) this.collapsed.delete(key);
    else this.collapsed.set(key, levels);
    let sum = 0;
    for (const level of levels.values()) sum += level;
    this.gauge.set(series, sum);
  }
}

export interface CoordinatorMetricsOptions {
  /** Node.js process metrics (default true). */
  defaultMetrics?: boolean;
  /**
   * Whether a model name is the catalog's or served by a connected provider; any other name is
   * labelled "other". Without it every model is "other".
   */
  modelOrigin?: (model: string) => ModelOrigin | undefined;
  /** Distinct model label values over the process's life (default 256). */
  maxModelLabels?: number;
}

const ENDPOINTS = ["chat_completions", "completions", "embeddings"];

/**
 * Prometheus metrics of one coordinator instance (its own registry, so tests can run several). Every
 * label takes its values from a bounded set: models from the catalog and the connected providers (up
 * to a budget), reasons and codes from the known ones; anything else is "other".
 */
export class CoordinatorMetrics {
  readonly registry = new Registry();
  readonly models: ModelLabels;

  readonly requests: BoundedCounter<"endpoint" | "model" | "status">;
  readonly requestDuration: BoundedHistogram<"endpoint" | "stream">;
  readonly firstTokenLatency: BoundedHistogram<"model">;
  readonly queueWait: BoundedHistogram<"model">;
  readonly retries: BoundedCounter<"reason">;
  readonly tokens: BoundedCounter<"model">;
  readonly metering: BoundedCounter<"model" | "mode">;
  readonly providerEvictions: BoundedCounter<"reason">;
  readonly attestationChallenges: BoundedCounter<"result">;
  readonly queueDepth: BoundedGauge<"model">;
  readonly forwarded: BoundedCounter<"direction" | "model" | "result">;
  /** What the fleet gauges read at scrape time (observeFleet); none until then. */
  private fleet: FleetSource | undefined;

  readonly providersConnected = new Gauge({
    name: "darkbloom_providers_connected",
    help: "Providers with an open stream.",
    registers: [this.registry],
  });

  readonly inFlight = new Gauge({
    name: "darkbloom_requests_in_flight",
    help: "Requests dispatched to providers and not yet finished.",
    registers: [this.registry],
  });

  // Connection and response limits.
  readonly connectionLimits = new Counter({
    name: "darkbloom_connection_limit_hits_total",
    help: "Connections refused and requests or responses cut by a connection limit, by limit.",
    labelNames: ["limit"] as const,
    registers: [this.registry],
  });

  constructor(options: CoordinatorMetricsOptions = {}) {
    const registers = [this.registry];
    this.models = new ModelLabels(options.modelOrigin ?? (() => undefined), options.maxModelLabels ?? 256);
    const model = (value: string) => this.models.label(value);
    const endpoint = oneOf(ENDPOINTS);
    this.requests = new BoundedCounter(
      new Counter({
        name: "darkbloom_requests_total",
        help: "Consumer inference requests by endpoint, model and outcome status code.",
        labelNames: ["endpoint", "model", "status"] as const,
        registers,
      }),
      { endpoint, model, status: statusLabel },
    );
    this.requestDuration = new BoundedHistogram(
      new Histogram({
        name: "darkbloom_request_duration_seconds",
        help: "Time from request arrival to the last byte of the response.",
        labelNames: ["endpoint", "stream"] as const,
        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
        registers,
      }),
      { endpoint, stream: oneOf(["true", "false"]) },
    );
    this.firstTokenLatency = new BoundedHistogram(
      new Histogram({
        name: "darkbloom_time_to_first_token_seconds",
        help: "Time from request arrival to the first token sent to the consumer.",
        labelNames: ["model"] as const,
        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
        registers,
      }),
      { model },
    );
    this.queueWait = new BoundedHistogram(
      new Histogram({
        name: "darkbloom_queue_wait_seconds",
        help: "Time requests waited in a model queue for a provider slot.",
        labelNames: ["model"] as const,
        buckets: [0.001, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30],
        registers,
      }),
      { model },
    );
    this.retries = new BoundedCounter(
      new Counter({
        name: "darkbloom_dispatch_retries_total",
        help: "Requests re-dispatched to another provider before their first byte, by reason.",
        labelNames: ["reason"] as const,
        registers,
      }),
      { reason: reasonLabel },
    );
    this.tokens = new BoundedCounter(
      new Counter({
        name: "darkbloom_completion_tokens_total",
        help: "Completion tokens delivered to consumers.",
        labelNames: ["model"] as const,
        registers,
      }),
      { model },
    );
    this.metering = new BoundedCounter(
      new Counter({
        name: "darkbloom_usage_metering_total",
        help:
          "Completed responses by how their usage was checked: counted (the model's vocabulary), " +
          "recounted (the provider disagreed with the count and llama.cpp counted again), " +
          "bounded (no vocabulary) or count_failed (the tokenizer did not answer; bounded instead).",
        labelNames: ["model", "mode"] as const,
        registers,
      }),
      { model, mode: oneOf(["counted", "recounted", "bounded", "count_failed"]) },
    );
    this.providerEvictions = new BoundedCounter(
      new Counter({
        name: "darkbloom_provider_evictions_total",
        help: "Providers removed from the registry, by reason.",
        labelNames: ["reason"] as const,
        registers,
      }),
      { reason: reasonLabel },
    );
    this.attestationChallenges = new BoundedCounter(
      new Counter({
        name: "darkbloom_attestation_challenges_total",
        help: "Attestation challenges completed, by result (passed, failed, expired).",
        labelNames: ["result"] as const,
        registers,
      }),
      { result: oneOf(["passed", "failed", "expired"]) },
    );
    this.queueDepth = new BoundedGauge(
      new Gauge({
        name: "darkbloom_queue_depth",
        help: `Requests waiting for a provider slot, by model (models past the label budget summed as "${OTHER}").`,
        labelNames: ["model"] as const,
        registers,
      }),
      { model },
    );
    this.forwarded = new BoundedCounter(
      new Counter({
        name: "darkbloom_forwarded_requests_total",
        help:
          "Requests forwarded between replicas to the replica holding the chosen provider's stream: " +
          "sent (this replica routed it elsewhere) or received (this replica dispatched it for a peer), " +
          "by result (admitted, or refused: the provider had left or had no free slot; routed again).",
        labelNames: ["direction", "model", "result"] as const,
        registers,
      }),
      { direction: oneOf(["sent", "received"]), model, result: oneOf(["admitted", "refused"]) },
    );
    registerFleetMetrics(this.registry, this.models, () => this.fleet);
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** Reports the fleet gauges (darkbloom_model_*, darkbloom_providers) from `source` at each scrape. */
  observeFleet(source: FleetSource): void {
    this.fleet = source;
  }
}
