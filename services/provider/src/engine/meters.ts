import { EngineError } from "./engine.js";
import type { GenerationJob } from "./generation-job.js";

const EMA_ALPHA = 0.2;

/** An exponential moving average that ignores samples that are not positive and finite. */
function ema(previous: number, sample: number): number {
  if (!Number.isFinite(sample) || sample <= 0) return previous;
  return previous === 0 ? sample : previous + EMA_ALPHA * (sample - previous);
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * An engine's counters and measured rates, shared by every model it runs: what stats() and
 * the provider's heartbeats report, and what the coordinator's routing starts from.
 */
export class EngineMeters {
  readonly counters = {
    requestsCompleted: 0,
    requestsFailed: 0,
    requestsCancelled: 0,
    tokensGenerated: 0,
    promptTokensProcessed: 0,
    decodeSteps: 0,
    /** Wall time of prompt chunks evaluated and of batched decode steps: the denominators of rates. */
    prefillSeconds: 0,
    decodeSeconds: 0,
  };
  /** Recent prefill tokens/s, decode tokens/s of one row, and decode tokens/s over the whole batch. */
  readonly rates = { prefill: 0, decodePerRow: 0, decodeAggregate: 0 };

  /** One batched decode of `rows` rows took `ms`. */
  decodeStep(ms: number, rows: number): void {
    this.counters.decodeSteps++;
    this.counters.decodeSeconds += ms / 1000;
    this.rates.decodePerRow = ema(this.rates.decodePerRow, 1000 / ms);
    this.rates.decodeAggregate = ema(this.rates.decodeAggregate, (1000 * rows) / ms);
  }

  /**
   * `steps` batched decode steps that produced `tokens` tokens took `seconds` in all: for an engine
   * that measures decode in spans (the native scheduler's counters) rather than step by step.
   */
  decodeSpan(steps: number, seconds: number, tokens: number): void {
    if (steps <= 0) return;
    this.counters.decodeSteps += steps;
    this.counters.decodeSeconds += seconds;
    if (seconds <= 0) return;
    this.rates.decodePerRow = ema(this.rates.decodePerRow, steps / seconds);
    this.rates.decodeAggregate = ema(this.rates.decodeAggregate, tokens / seconds);
  }

  /** A prompt chunk of `tokens` tokens was evaluated in `seconds`. */
  prefillChunk(tokens: number, seconds: number): void {
    this.counters.promptTokensProcessed += tokens;
    this.counters.prefillSeconds += seconds;
    if (seconds > 0) this.rates.prefill = ema(this.rates.prefill, tokens / seconds);
  }

  /** Fails a job and counts it: an EngineError as it is, anything else as engine_failed. */
  failJob(job: GenerationJob, err: unknown): void {
    if (job.settled) return;
    const engineError =
      err instanceof EngineError
        ? err
        : new EngineError("engine_failed", `generation failed: ${errorMessage(err)}`, 500, { cause: err });
    job.fail(engineError);
    this.counters.requestsFailed++;
  }
}
