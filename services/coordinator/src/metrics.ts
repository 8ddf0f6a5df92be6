import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** Prometheus metrics of one coordinator instance (its own registry, so tests can run several). */
export class CoordinatorMetrics {
  readonly registry = new Registry();

  readonly requests = new Counter({
    name: "darkbloom_requests_total",
    help: "Consumer inference requests by endpoint, model and outcome status code.",
    labelNames: ["endpoint", "model", "status"] as const,
    registers: [this.registry],
  });

  readonly requestDuration = new Histogram({
    name: "darkbloom_request_duration_seconds",
    help: "Time from request arrival to the last byte of the response.",
    labelNames: ["endpoint", "stream"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });

  readonly firstTokenLatency = new Histogram({
    name: "darkbloom_time_to_first_token_seconds",
    help: "Time from request arrival to the first token sent to the consumer.",
    labelNames: ["model"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  readonly queueWait = new Histogram({
    name: "darkbloom_queue_wait_seconds",
    help: "Time requests waited in a model queue for a provider slot.",
    labelNames: ["model"] as const,
    buckets: [0.001, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  readonly retries = new Counter({
    name: "darkbloom_dispatch_retries_total",
    help: "Requests re-dispatched to another provider before their first byte.",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });

  readonly tokens = new Counter({
    name: "darkbloom_completion_tokens_total",
    help: "Completion tokens delivered to consumers.",
    labelNames: ["model"] as const,
    registers: [this.registry],
  });

  readonly providersConnected = new Gauge({
    name: "darkbloom_providers_connected",
    help: "Providers with an open stream.",
    registers: [this.registry],
  });

  readonly providerEvictions = new Counter({
    name: "darkbloom_provider_evictions_total",
    help: "Providers removed from the registry, by reason.",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });

  readonly attestationChallenges = new Counter({
    name: "darkbloom_attestation_challenges_total",
    help: "Attestation challenges completed, by result (passed, failed, expired).",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });

  readonly queueDepth = new Gauge({
    name: "darkbloom_queue_depth",
    help: "Requests waiting for a provider slot, by model.",
    labelNames: ["model"] as const,
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

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }
}
