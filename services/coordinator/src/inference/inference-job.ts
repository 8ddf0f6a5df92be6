import type { ModelPrice } from "../billing/pricing.js";
import type { TokenCounter } from "../billing/usage-meter.js";
import type { RouteDemand } from "../routing/cost-model.js";
import type { RouteConstraints } from "../routing/scheduler.js";
import type { ValidatedRequest } from "./request-validation.js";
import type { Timing } from "./timing.js";
import type { ToolOutputContext } from "./tool-calls.js";

/** A request ready to route: validated, authenticated, with its token budget fixed. */
export interface InferenceJob {
  requestId: string;
  accountId: string;
  request: ValidatedRequest;
  /** Completion-token budget per choice enforced for this request. */
  maxTokens: number;
  /** Estimated prompt tokens (routing, the context gate). */
  promptTokens: number;
  /** The model's token counts, when the catalog has its vocabulary (execute() sets it). */
  counter: TokenCounter | undefined;
  /**
   * The prompt's count with the model's tokenizer, made while the request is served (undefined when
   * it could not be counted): what the provider must report, and what a cancelled request pays.
   */
  promptCount: number | Promise<number | undefined> | undefined;
  demand: RouteDemand;
  constraints: RouteConstraints;
  timing: Timing;
  /** SHA-256 of request.body, computed once when the first provider completes (or, with tools, at the start). */
  requestSha256?: Uint8Array;
  /** A request with `tools`: how the model's output splits into content and calls (execute() sets it). */
  tools?: ToolOutputContext;
}

/** What the pipeline needs of the model catalog: an in-memory lookup of state, prices and tokenizer. */
export interface CatalogView {
  lookup(
    modelId: string,
  ): ({ enabled: boolean; embeddingMinDimensions?: number | undefined } & ModelPrice) | undefined;
  /** The model's token counts when the catalog has its vocabulary (and it is loaded). */
  tokenizer?(modelId: string): TokenCounter | undefined;
}
