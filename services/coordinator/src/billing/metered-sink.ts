import type { ChunkPayload } from "@darkbloom/protocol/provider/v1";
import { ApiError } from "../errors/index.js";
import type { CompletionResult, ResponseSink } from "../inference/response-sink.js";
import type { ProviderHandle } from "../routing/provider-handle.js";

/** How a metered request ended, for settlement. */
export type MeteredOutcome =
  | { kind: "completed"; result: CompletionResult }
  | { kind: "failed" }
  | { kind: "cut" }
  | { kind: "cancelled" };

/**
 * Counts the completion tokens that reach the consumer and stops a response that would go past what
 * was reserved: the chunk that would exceed the budget is not delivered, the provider is cancelled
 * (onCut) and a stream ends with an error event, so a small reservation cannot buy an unbounded stream.
 */
export class MeteredSink implements ResponseSink {
  delivered = 0;
  provider: ProviderHandle | undefined;
  outcome: MeteredOutcome = { kind: "cancelled" };

  constructor(
    private readonly inner: ResponseSink,
    private readonly budgetTokens: number,
    private readonly onCut: () => void,
  ) {}

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
    this.inner.attempt(provider);
  }

  chunk(payload: ChunkPayload): void {
    if (this.outcome.kind === "cut") return;
    if (this.delivered + payload.tokenCount > this.budgetTokens) {
      this.outcome = { kind: "cut" };
      this.inner.fail(
        new ApiError({
          status: 402,
          type: "insufficient_funds",
          code: "reservation_exhausted",
          message: `The response reached the ${this.budgetTokens} completion tokens reserved for it and was stopped.`,
        }),
      );
      this.onCut();
      return;
    }
    this.delivered += payload.tokenCount;
    this.inner.chunk(payload);
  }

  complete(result: CompletionResult): void {
    if (this.outcome.kind === "cut") return;
    this.outcome = { kind: "completed", result };
    this.inner.complete(result);
  }

  fail(error: ApiError): void {
    if (this.outcome.kind === "cut") return;
    this.outcome = { kind: "failed" };
    this.inner.fail(error);
  }
}
