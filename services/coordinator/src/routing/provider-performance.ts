/**
 * What the coordinator measured of providers, for routing. Anything a provider reports about its own
 * speed is a claim (a provider advertising 1e9 tokens a second would otherwise win every request), so
 * routing scores on what the coordinator itself timed of each provider's answers: the first-token
 * latency and the decode rate of completed requests, and how often its requests failed. Advertised
 * figures count only as a prior for a provider with few measurements, clamped to what the fleet
 * serving that model is measured to do, and they fade as the provider's own samples accumulate.
 * Samples decay with age (a half-life), so a provider that slows down or recovers is seen to.
 */

/** Age at which a sample counts half (decode rates, first-token latencies, failures). */
export const PERFORMANCE_HALF_LIFE_MS = 10 * 60_000;
/** Weight of the prior against the provider's own samples (in samples). */
export const PRIOR_WEIGHT = 1;
/** A failure rate of 1 makes a provider look this many times slower, plus one. */
export const FAILURE_PENALTY = 4;
/** Machines whose measurements are kept across reconnects (least recently used dropped first). */
export const PERFORMANCE_BOOK_CAPACITY = 50_000;

/** A time-decayed mean: old samples weigh 2^(-age / half-life). */
export class DecayedMean {
  private weight = 0;
  private sum = 0;
  private at = 0;

  constructor(private readonly halfLifeMs = PERFORMANCE_HALF_LIFE_MS) {}

  add(value: number, now: number, weight = 1): void {
    this.decay(now);
    this.weight += weight;
    this.sum += value * weight;
  }

  /** The weight of the samples still counting (about the number of recent samples). */
  samples(now: number): number {
    this.decay(now);
    return this.weight;
  }

  /** The weighted total of what was added (e.g. a decayed count when every value is 1). */
  total(now: number): number {
    this.decay(now);
    return this.sum;
  }

  mean(now: number): number | undefined {
    this.decay(now);
    return this.weight > 1e-6 ? this.sum / this.weight : undefined;
  }

  private decay(now: number): void {
    if (now > this.at && this.weight > 0) {
      const f = 2 ** (-(now - this.at) / this.halfLifeMs);
      this.weight *= f;
      this.sum *= f;
    }
    this.at = Math.max(this.at, now);
  }
}

/** One completed request, as the coordinator timed it. */
export interface CompletionSample {
  model: string;
  /** Prompt tokens of the accepted usage. */
  promptTokens: number;
  /** Completion tokens per choice of the accepted usage. */
  tokensPerChoice: number;
  /** From dispatch to the first chunk. */
  firstTokenMs: number;
  /** From the first chunk to InferenceComplete. */
  decodeMs: number;
  /** Requests the provider was serving for the coordinator when this one was dispatched (itself included). */
  rows: number;
}

/** Rates of one provider for one model. */
class ModelRates {
  readonly prefill = new DecayedMean();
  /** Single-row decode rate (the measured per-row rate undone of its batch's slowdown). */
  readonly decode = new DecayedMean();
}

/** Per-model rates of the fleet: the ceiling of a newcomer's advertised figures. */
export class FleetBaseline {
  private readonly decode = new Map<string, DecayedMean>();
  private readonly prefill = new Map<string, DecayedMean>();

  record(model: string, kind: "decode" | "prefill", rate: number, now: number): void {
    const book = kind === "decode" ? this.decode : this.prefill;
    let mean = book.get(model);
    if (!mean) {
      mean = new DecayedMean();
      book.set(model, mean);
    }
    mean.add(rate, now);
  }

  rate(model: string, kind: "decode" | "prefill", now: number): number | undefined {
    return (kind === "decode" ? this.decode : this.prefill).get(model)?.mean(now);
  }

  /** The models with a measured rate of `kind`. */
  models(kind: "decode" | "prefill"): IterableIterator<string> {
    return (kind === "decode" ? this.decode : this.prefill).keys();
  }
}

/**
 * One machine's measured behaviour. Kept by machine id in the PerformanceBook, so reconnecting does
 * not wipe a record of failures.
 */
export class ProviderPerformance {
  private readonly models = new Map<string, ModelRates>();
  private readonly outcomes = new DecayedMean();

  constructor(
    private readonly fleet: FleetBaseline,
    /** Slowdown per extra batch row (the cost model's BATCH_DEGRADATION). */
    private readonly batchDegradation: number,
  ) {}

  /** A completed request: its rates become samples, and it counts as a success. */
  recordCompletion(s: CompletionSample, now = Date.now()): void {
    this.outcomes.add(0, now);
    const rates = this.rates(s.model);
    if (s.promptTokens > 0 && s.firstTokenMs > 0) {
      const prefill = s.promptTokens / (s.firstTokenMs / 1000);
      rates.prefill.add(prefill, now);
      this.fleet.record(s.model, "prefill", prefill, now);
    }
    // The first token is in the first-token latency; the rest were decoded between the first chunk
    // and the end. Too few tokens or too short a span says nothing about the rate.
    if (s.tokensPerChoice >= 2 && s.decodeMs >= 1) {
      const perRow = (s.tokensPerChoice - 1) / (s.decodeMs / 1000);
      const singleRow = perRow * (1 + this.batchDegradation * (Math.max(1, s.rows) - 1));
      rates.decode.add(singleRow, now);
      this.fleet.record(s.model, "decode", singleRow, now);
    }
  }

  /** A request the provider failed (an error, a timeout, a dropped stream, a metering violation). */
  recordFailure(now = Date.now()): void {
    this.outcomes.add(1, now);
  }

  /** Recent failures over recent requests (0 without any). */
  failureRate(now = Date.now()): number {
    return this.outcomes.mean(now) ?? 0;
  }

  /**
   * The rate routing should assume: the provider's measured rate blended with its prior, where the
   * prior is its advertised figure clamped to the fleet's measured rate for the model (that rate
   * itself without an advertised figure). With no measurement anywhere the ceiling is `fallback`.
   */
  rate(
    model: string,
    kind: "decode" | "prefill",
    advertised: number,
    fallback: number,
    now = Date.now(),
  ): number {
    // A provider that advertises nothing is presumed typical of the fleet: presuming it slower would
    // starve it of the requests that would measure it.
    const ceiling = this.fleet.rate(model, kind, now) ?? fallback;
    const prior = advertised > 0 ? Math.min(advertised, ceiling) : ceiling;
    const mean = this.models.get(model)?.[kind];
    const samples = mean?.samples(now) ?? 0;
    const measured = mean?.mean(now);
    if (measured === undefined || samples <= 0) return prior;
    return (measured * samples + prior * PRIOR_WEIGHT) / (samples + PRIOR_WEIGHT);
  }

  private rates(model: string): ModelRates {
    let r = this.models.get(model);
    if (!r) {
      r = new ModelRates();
      this.models.set(model, r);
    }
    return r;
  }
}

/** Measured behaviour by machine id, bounded (least recently used machines forgotten first). */
export class PerformanceBook {
  private readonly machines = new Map<string, ProviderPerformance>();
  readonly fleet = new FleetBaseline();

  constructor(
    private readonly batchDegradation: number,
    private readonly capacity = PERFORMANCE_BOOK_CAPACITY,
  ) {}

  /** The record of a machine (created on first use). */
  of(machineId: string): ProviderPerformance {
    let p = this.machines.get(machineId);
    if (p) {
      this.machines.delete(machineId); // re-inserted: most recently used
    } else {
      p = new ProviderPerformance(this.fleet, this.batchDegradation);
      if (this.machines.size >= this.capacity) {
        const oldest = this.machines.keys().next().value;
        if (oldest !== undefined) this.machines.delete(oldest);
      }
    }
    this.machines.set(machineId, p);
    return p;
  }
}
