import type { ChunkPayload } from "@darkbloom/protocol/provider/v1";
import type { ApiError } from "../errors/index.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import type { CompletionResult, ResponseSink } from "./response-sink.js";

/** How a metered request ended, for settlement. */
export type MeteredOutcome =
  | { kind: "completed"; result: CompletionResult }
  | { kind: "failed" }
  | { kind: "cancelled" };

/**
 * What reached the consumer, for settlement: the completion tokens of every chunk forwarded (each
 * already accepted by the attempt's UsageMeter, so a provider's count only gets here when the text
 * bears it out), which provider it came from, whether that provider had accepted the request (a
 * consumer who cancels after dispatch pays for the prefill), and how the request ended.
 */
export class MeteredSink implements ResponseSink {
  delivered = 0;
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

  attempt(provider: ProviderHandle): void {
    // Output of an earlier try that never reached the consumer is not paid for.
    if (!this.inner.committed) this.delivered = 0;
    this.provider = provider;
    this.dispatched = false;
    this.inner.attempt(provider);
  }

  /** The current attempt's provider acknowledged the request. */
  accepted(): void {
    this.dispatched = true;
  }

  chunk(payload: ChunkPayload): void {
    this.delivered += payload.tokenCount;
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
