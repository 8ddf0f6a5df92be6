/**
 * POST /v1/embeddings and the typed Embed call, after authentication: the model and the request
 * checked against what the catalog knows of it, each input counted with the model's tokenizer while
 * the request is served, the worst case reserved, the request routed (only to providers that
 * compute the model's embeddings) with invisible retries, and the inputs' tokens settled.
 */
import type { EmbeddingModel } from "@darkbloom/models/embeddings";
import { parseTrustLevelName } from "@darkbloom/protocol";
import { ModelFeature, TrustLevel } from "@darkbloom/protocol/provider/v1";
import { wipe } from "@darkbloom/protocol/sealed-box";
import { sha256 } from "@darkbloom/protocol/verifiable-response";
import type { Billing } from "../billing/billing.js";
import { completedCharge, cost, FREE, worstCase } from "../billing/pricing.js";
import type { TokenCounter } from "../billing/usage-meter.js";
import {
  ApiError,
  contextLengthExceeded,
  invalidRequest,
  modelNotFound,
  providerError,
  serviceUnavailable,
} from "../errors/index.js";
import { type EmbeddingsJob, type EmbeddingsResult, runEmbeddingsAttempt } from "./embeddings-attempt.js";
import type { ValidatedEmbeddings } from "./embeddings-request.js";
import type { PipelineDeps } from "./pipeline.js";
import { RequestStopped } from "./response-sink.js";
import { routeWithRetries } from "./routing-loop.js";
import type { RoutingPreferences } from "./routing-preferences.js";
import type { Timing } from "./timing.js";

export type { EmbeddingsResult };

/**
 * Serves an embeddings request; resolves with the embeddings, or undefined when the consumer left
 * first. Throws ApiError for what the consumer is told instead (404, 400, 402, 503, a provider's
 * failure).
 */
export async function serveEmbeddings(
  deps: PipelineDeps,
  requestId: string,
  accountId: string,
  request: ValidatedEmbeddings,
  timing: Timing,
  preferences: RoutingPreferences,
  signal: AbortSignal,
): Promise<EmbeddingsResult | undefined> {
  const job = prepare(deps, requestId, accountId, request, timing, preferences);
  const price = deps.catalog.lookup(request.model) ?? FREE;
  const bound = request.inputTokenBounds.reduce((sum, b) => sum + b, 0);
  const { billing } = deps;
  if (billing) {
    const t = performance.now();
    try {
      await billing.reserve(requestId, accountId, request.model, worstCase(price, bound, 0, 1));
    } catch (e) {
      if (!(e instanceof ApiError)) deps.log.error({ err: e, requestId }, "reservation failed");
      throw e instanceof ApiError
        ? e
        : serviceUnavailable("Billing is unavailable; retry shortly.", "billing_unavailable");
    }
    timing.add("reserve", t);
  }
  let failure: ApiError | undefined;
  try {
    failure = await routeWithRetries(deps, job, signal, (session) =>
      runEmbeddingsAttempt(deps, session, job, signal),
    );
  } finally {
    wipe(request.body);
    if (billing) await settle(billing, job, price, consumerLeft(signal));
    deps.timings?.record(requestId, timing.phases());
  }
  if (job.result) return job.result;
  if (signal.aborted) return undefined;
  throw failure ?? job.failure ?? providerError("No provider completed the request.");
}

function prepare(
  deps: PipelineDeps,
  requestId: string,
  accountId: string,
  request: ValidatedEmbeddings,
  timing: Timing,
  preferences: RoutingPreferences,
): EmbeddingsJob {
  const { providers, catalog, config } = deps;
  const served = providers.serves(request.model);
  const entry = catalog.lookup(request.model);
  if ((!served && !entry?.enabled) || (entry && !entry.enabled)) throw modelNotFound(request.model);
  const counter = catalog.tokenizer?.(request.model);
  const model = counter?.embeddingModel;
  if (counter && !model) {
    throw invalidRequest(
      `The model '${request.model}' is not an embedding model; it serves /v1/chat/completions and /v1/completions.`,
      "model",
    );
  }
  if (request.dimensions !== undefined) checkDimensions(request.model, request.dimensions, model, entry);
  // The context gate, on each input's estimate: the provider refuses one its count finds longer.
  if (served) {
    const limit = providers.contextLimit(request.model);
    for (const [i, input] of request.inputs.entries()) {
      const estimate = Math.ceil(input.text.length / 4) + 2;
      if (estimate >= limit) throw contextLengthExceeded(estimate, limit, `input[${i}]`);
    }
  }
  const minTrust = parseTrustLevelName(config.minTrustLevel) ?? TrustLevel.NONE;
  return {
    requestId,
    accountId,
    model: request.model,
    request,
    timing,
    counter,
    inputCounts: counter && countInputs(deps, requestId, request, counter),
    dimensions: request.dimensions ?? model?.dimensions,
    requestSha256: sha256(request.body),
    dispatched: false,
    // One input at a time on the provider: the largest is what must fit its context.
    demand: { model: request.model, promptTokens: request.promptTokens, maxTokens: 0 },
    constraints: {
      minTrust: Math.max(minTrust, preferences.minTrust ?? TrustLevel.NONE),
      allow: preferences.allow,
      exclude: preferences.exclude,
      features: [ModelFeature.EMBEDDINGS],
      ...(counter ? { countedUsage: true } : {}),
    },
  };
}

/** Each input's tokens with the model's tokenizer; undefined (usage only bounded) when it fails. */
function countInputs(
  deps: PipelineDeps,
  requestId: string,
  request: ValidatedEmbeddings,
  counter: TokenCounter,
): Promise<number[] | undefined> {
  const failed = (e: unknown) => {
    deps.log.warn(
      { requestId, model: request.model, err: (e as Error).message },
      "the inputs could not be counted; this request's usage is only bounded",
    );
    return undefined;
  };
  const now = counter.countPromptNow;
  if (now) {
    try {
      return Promise.resolve(request.inputs.map((input) => now(input)));
    } catch (e) {
      return Promise.resolve(failed(e));
    }
  }
  return Promise.all(request.inputs.map((input) => counter.countPrompt(input))).catch(failed);
}

/**
 * Completed: the inputs' tokens (the usage the consumer is shown). Not completed: nothing, unless the
 * consumer left after a provider accepted the request, which then computed what it was asked to
 * (the inputs' count, or their estimate without the vocabulary), as a prompt cancelled in prefill.
 */
async function settle(billing: Billing, job: EmbeddingsJob, price: typeof FREE, byConsumer: boolean) {
  let promptTokens = 0;
  let charge = 0n;
  let outcome = "failed";
  if (job.result) {
    promptTokens = job.result.promptTokens;
    charge = completedCharge(price, promptTokens, 0);
    outcome = "completed";
  } else if (byConsumer) {
    outcome = "cancelled";
    if (job.dispatched) {
      const counts = await job.inputCounts;
      promptTokens = counts ? counts.reduce((sum, c) => sum + c, 0) : job.request.promptTokens;
      charge = cost(price, promptTokens, 0);
    }
  }
  const provider = job.result?.provider ?? job.provider;
  await billing.settleOrDefer(job.requestId, {
    chargeMicroUsd: charge,
    providerAccount: provider?.payoutAccount ?? "platform:fees",
    promptTokens,
    completionTokens: 0,
    outcome,
  });
}

/** Whether the consumer left (rather than a limit stopping the request). */
function consumerLeft(signal: AbortSignal): boolean {
  return signal.aborted && (!(signal.reason instanceof RequestStopped) || signal.reason.byConsumer);
}

/**
 * `dimensions` is served where the catalog says the model was trained for Matryoshka shortening
 * (embeddingMinDimensions): from that minimum up to its own length, the provider keeping the first
 * d values and normalizing them again. Elsewhere only the model's own length; without the model's
 * vocabulary its length is unknown, and a `dimensions` that nothing here can check is refused
 * rather than passed to a provider that would shorten anything it is asked to.
 */
function checkDimensions(
  modelId: string,
  dimensions: number,
  model: EmbeddingModel | undefined,
  entry: { embeddingMinDimensions?: number | undefined } | undefined,
): void {
  const min = entry?.embeddingMinDimensions;
  if (model === undefined) {
    throw invalidRequest(
      `The embedding length of '${modelId}' is not known here, so 'dimensions' cannot be served; leave it out.`,
      "dimensions",
    );
  }
  if (min === undefined) {
    if (dimensions === model.dimensions) return;
    throw invalidRequest(
      `The model '${modelId}' computes ${model.dimensions}-dimensional embeddings and cannot shorten them; leave 'dimensions' out or send ${model.dimensions}.`,
      "dimensions",
    );
  }
  if (dimensions < min || dimensions > model.dimensions) {
    throw invalidRequest(
      `'dimensions' must be from ${min} to ${model.dimensions} for '${modelId}'.`,
      "dimensions",
    );
  }
}
