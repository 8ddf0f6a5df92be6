import type { UsageMeter } from "../billing/usage-meter.js";
import type { ApiError } from "../errors/index.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import type { CompletionResult, OutputChunk, ResponseSink } from "./response-sink.js";

/** How a metered request ended, for settlement. */
export type MeteredOutcome =
  | { kind: "completed"; result: CompletionResult }
  | { kind: "failed" }
  | { kind: "cancelled" };

/**
 * What reached the consumer, for settlement: the completion tokens of the text forwarded (the
 * attempt's UsageMeter counts it, and every chunk forwarded was accepted by it first), which provider
 * it came from, whether that provider had accepted the request (a consumer who cancels after dispatch
 * pays for the prefill), and how the request ended.
 */
export class MeteredSink implements ResponseSink {
  /** The meter of the attempt whose output reaches the consumer. */
  private meter: UsageMeter | undefined;
  provider: ProviderHandle | undefined;
  /** Whether the provider serving the current attempt acknowledged the request (it is prefilling). */
  dispatched = false;
  outcome: MeteredOutcome = { kind: "cancelled" };

  constructor(private readonly inner: ResponseSink) {}

  get committed(): boolean {
    return this.inner.committed;
  }

  get streaming(): boolean {
    return this.inner.streaming;
  }

  /** Completion tokens of the text that reached the consumer. */
  delivered(): Promise<number> {
    return this.meter?.delivered() ?? Promise.resolve(0);
  }

  /** A try on `provider`, metered by `meter` (what is paid for if it does not complete). */
  attempt(provider: ProviderHandle, meter?: UsageMeter): void {
    // Output of an earlier try that never reached the consumer is not paid for (and once output
    // reached the consumer there is no other try).
    if (!this.inner.committed) this.meter = meter;
    this.provider = provider;
    this.dispatched = false;
    this.inner.attempt(provider);
  }

  /** The current attempt's provider acknowledged the request. */
  accepted(): void {
    this.dispatched = true;
  }

  chunk(payload: OutputChunk): void {
    this.inner.chunk(payload);
  }

  complete(result: CompletionResult): void {
    this.outcome = { kind: "completed", result };
    this.inner.complete(result);
  }

  fail(error: ApiError): void {
    this.outcome = { kind: "failed" };
    this.inner.fail(error);
  }
}
