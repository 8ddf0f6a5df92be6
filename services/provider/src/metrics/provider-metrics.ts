import type { Logger } from "pino";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { Engine, EngineObserver, EngineStats, ModelLoadEvent } from "../engine/engine.js";
import { engineStats } from "../link/heartbeats.js";
import {
  type DisconnectReason,
  type LinkCounters,
  type LinkObserver,
  REQUEST_OUTCOMES,
  type RequestOutcome,
} from "../link/options.js";
import { DISCONNECT_REASONS, LOAD_RESULTS, ModelLabels, oneOf } from "./labels.js";

/** What the metrics read of the link at scrape time (ProviderLink has it). */
export interface LinkSource {
  readonly connected: boolean;
  readonly inFlight: number;
  readonly counters: Readonly<LinkCounters>;
}

export interface ProviderMetricsOptions {
  /** Its stats are read at every scrape, through the same function the heartbeats use. */
  engine: Engine;
  /** The models this daemon was configured to serve: the model label's values. */
  models: Iterable<string>;
  /** The daemon's version (build_info). */
  version: string;
  /** Where a failing engine stats() call is logged (as the heartbeats do). */
  logger: Logger;
  /** Node.js process metrics (process_*, nodejs_*); default true. */
  defaultMetrics?: boolean;
}

const PREFIX = "darkbloom_provider_";

/** Model loads: from a small model in memory to tens of GB read from disk and vetted first. */
const LOAD_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

/**
 * A counter that mirrors a running total kept elsewhere (the engine's and the link's counters):
 * each scrape adds what the total grew by, so the source stays the one the heartbeats report.
 */
class MirroredCounter {
  private last = 0;

  constructor(private readonly counter: Counter) {}

  update(total: number | undefined): void {
    if (total === undefined || !Number.isFinite(total) || total <= this.last) return;
    this.counter.inc(total - this.last);
    this.last = total;
  }
}

/**
 * Prometheus metrics of one provider daemon, on a registry of its own (several daemons may run in
 * one process: the tests). The load figures (busy rows, queue, KV cache, rates, tokens) are read
 * from the engine's stats() once per scrape, through the function the heartbeats use, so that what
 * Prometheus sees and what the coordinator is told cannot disagree; request outcomes and model loads
 * are reported by the link and the engine as they happen (it implements both observers).
 */
export class ProviderMetrics implements EngineObserver, LinkObserver {
  readonly registry = new Registry();
  private readonly engine: Engine;
  private readonly log: Logger;
  private readonly models: ModelLabels;
  private link: LinkSource | undefined;

  private readonly busySlots = this.gauge(
    "batch_slots_busy",
    "Batch rows generating now, over every loaded model (the heartbeat's busy_slots).",
  );
  private readonly totalSlots = this.gauge(
    "batch_slots",
    "Batch rows of the loaded models (--max-batch per loaded model): how many generations can run at once.",
  );
  private readonly queueDepth = this.gauge(
    "queue_depth",
    "Generations waiting for a batch row or being prepared (the heartbeat's queue_depth).",
  );
  private readonly inFlight = this.gauge(
    "requests_in_flight",
    "Requests from the coordinator accepted and not finished yet.",
  );
  private readonly kvUsage = this.gauge(
    "kv_cache_usage_ratio",
    "Share of the loaded models' KV-cache cells in use, 0 to 1 (the heartbeat's kv_cache_usage).",
  );
  private readonly kvTokens = this.gauge(
    "kv_cache_tokens",
    "KV-cache cells (one per token) held by rows with a generation.",
  );
  private readonly kvCapacity = this.gauge(
    "kv_cache_capacity_tokens",
    "KV-cache cells (one per token) of the loaded models' contexts, every row together.",
  );
  private readonly prefillRate = this.gauge(
    "prefill_tokens_per_second",
    "Moving average of the prompt-evaluation rate that the heartbeat reports and the coordinator " +
      "routes on; for graphs use rate(prompt_tokens_total) / rate(prefill_seconds_total).",
  );
  private readonly decodeRate = this.gauge(
    "decode_tokens_per_second",
    "Moving average of one row's decode rate that the heartbeat reports and the coordinator routes " +
      "on; for graphs use rate(decode_steps_total) / rate(decode_seconds_total).",
  );
  private readonly connected = this.gauge(
    "coordinator_connected",
    "1 while a stream to the coordinator is open and registered, else 0.",
  );

  private readonly generatedTokens = this.mirrored(
    "generated_tokens_total",
    "Tokens sampled by the engine (the heartbeat's tokens_generated); rate() of it is the decode " +
      "throughput over every row.",
  );
  private readonly promptTokens = this.mirrored("prompt_tokens_total", "Prompt tokens evaluated (prefill).");
  private readonly prefillSeconds = this.mirrored(
    "prefill_seconds_total",
    "Seconds spent evaluating prompt chunks; rate(prompt_tokens_total) / rate(prefill_seconds_total) " +
      "is the prefill speed.",
  );
  private readonly decodeSeconds = this.mirrored(
    "decode_seconds_total",
    "Seconds spent in batched decode steps; rate(generated_tokens_total) / rate(decode_seconds_total) " +
      "is the batch's decode speed while it decodes.",
  );
  private readonly decodeSteps = this.mirrored(
    "decode_steps_total",
    "Batched decode steps (each samples one token for every generating row); per second of " +
      "decode_seconds_total it is one row's decode speed.",
  );
  private readonly registrations = this.mirrored(
    "coordinator_registrations_total",
    "Registrations acknowledged by the coordinator; each after the first is a reconnect.",
  );
  private readonly heartbeats = this.mirrored("heartbeats_sent_total", "Heartbeats sent to the coordinator.");

  private readonly requests = new Counter({
    name: `${PREFIX}requests_total`,
    help:
      "Requests from the coordinator by model and outcome: completed, refused (before generating: " +
      "draining, model not served, unreadable body), failed (after accepting), cancelled (by the " +
      'coordinator), abandoned (the stream ended); models not served here are "other".',
    labelNames: ["model", "outcome"],
    registers: [this.registry],
  });
  private readonly modelLoads = new Counter({
    name: `${PREFIX}model_loads_total`,
    help:
      "Models brought into memory, by model and result: loaded, failed, cancelled (unloaded or the " +
      "engine closed while loading). Loads on first use and after an idle unload count too.",
    labelNames: ["model", "result"],
    registers: [this.registry],
  });
  private readonly modelLoadDuration = new Histogram({
    name: `${PREFIX}model_load_duration_seconds`,
    help: "Time from the start of a model load (vetting the file included) to its context being ready, successful loads only.",
    labelNames: ["model"],
    buckets: LOAD_BUCKETS,
    registers: [this.registry],
  });
  private readonly modelLoaded = new Gauge({
    name: `${PREFIX}model_loaded`,
    help: "1 for each configured model in memory now, 0 for one that is not.",
    labelNames: ["model"],
    registers: [this.registry],
  });
  private readonly engineThreads = new Gauge({
    name: `${PREFIX}engine_threads`,
    help:
      "CPU threads each loaded model evaluates with (--threads, or what auto chose from the model's " +
      "size and the physical cores); 0 for a model not in memory.",
    labelNames: ["model"],
    registers: [this.registry],
  });
  private readonly disconnects = new Counter({
    name: `${PREFIX}coordinator_disconnects_total`,
    help:
      "Streams to the coordinator that ended, by reason: drained, closed_by_coordinator, error " +
      "(including dials that failed), stopped, rejected (the registration was refused).",
    labelNames: ["reason"],
    registers: [this.registry],
  });

  constructor(options: ProviderMetricsOptions) {
    this.engine = options.engine;
    this.log = options.logger;
    this.models = new ModelLabels(options.models);
    new Gauge({
      name: `${PREFIX}build_info`,
      help: "Always 1; its labels name the daemon's version and engine backend.",
      labelNames: ["version", "engine"],
      registers: [this.registry],
    }).set({ version: options.version, engine: options.engine.backend }, 1);
    // Every series of a bounded label set from the start: a rate over a series that appears only
    // with its first increment misses that increment.
    for (const model of this.models.values) {
      for (const outcome of REQUEST_OUTCOMES) this.requests.inc({ model, outcome }, 0);
      for (const result of LOAD_RESULTS) this.modelLoads.inc({ model, result }, 0);
      this.modelLoaded.set({ model }, 0);
      this.engineThreads.set({ model }, 0);
    }
    for (const reason of DISCONNECT_REASONS) this.disconnects.inc({ reason }, 0);
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** The link the connection figures are read from, once it exists. */
  attachLink(link: LinkSource): void {
    this.link = link;
  }

  modelLoad(event: ModelLoadEvent): void {
    const model = this.models.of(event.model);
    this.modelLoads.inc({ model, result: oneOf(LOAD_RESULTS, event.outcome) });
    if (event.outcome === "loaded") this.modelLoadDuration.observe({ model }, event.seconds);
  }

  requestFinished(model: string, outcome: RequestOutcome): void {
    this.requests.inc({ model: this.models.of(model), outcome: oneOf(REQUEST_OUTCOMES, outcome) });
  }

  linkDisconnected(reason: DisconnectReason): void {
    this.disconnects.inc({ reason: oneOf(DISCONNECT_REASONS, reason) });
  }

  /** The content type of `expose()`. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text of one scrape: reads the engine's stats and the link once, then serializes. */
  async expose(): Promise<string> {
    this.refresh(engineStats(this.engine, this.log));
    return this.registry.metrics();
  }

  private refresh(stats: EngineStats): void {
    this.busySlots.set(stats.busySlots);
    this.totalSlots.set(stats.totalSlots ?? 0);
    this.queueDepth.set(stats.queueDepth);
    this.kvUsage.set(Math.min(1, Math.max(0, stats.kvCacheUsage)));
    this.kvTokens.set(stats.kvCacheTokens ?? 0);
    this.kvCapacity.set(stats.kvCacheCapacityTokens ?? 0);
    this.prefillRate.set(stats.prefillTokensPerSecond);
    this.decodeRate.set(stats.decodeTokensPerSecond);
    this.generatedTokens.update(stats.tokensGenerated);
    this.promptTokens.update(stats.promptTokensProcessed);
    this.prefillSeconds.update(stats.prefillSeconds);
    this.decodeSeconds.update(stats.decodeSeconds);
    this.decodeSteps.update(stats.decodeSteps);
    const loaded = new Set(stats.loadedModels);
    for (const model of this.models.values) {
      this.modelLoaded.set({ model }, loaded.has(model) ? 1 : 0);
      this.engineThreads.set({ model }, (loaded.has(model) && this.engine.threadsFor?.(model)) || 0);
    }
    const link = this.link;
    this.connected.set(link?.connected ? 1 : 0);
    this.inFlight.set(link?.inFlight ?? 0);
    this.registrations.update(link?.counters.registrations);
    this.heartbeats.update(link?.counters.heartbeatsSent);
  }

  private gauge(name: string, help: string): Gauge {
    return new Gauge({ name: `${PREFIX}${name}`, help, registers: [this.registry] });
  }

  private mirrored(name: string, help: string): MirroredCounter {
    return new MirroredCounter(new Counter({ name: `${PREFIX}${name}`, help, registers: [this.registry] }));
  }
}
