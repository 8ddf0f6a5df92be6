import { parseTrustLevelName } from "@darkbloom/protocol";
import { Endpoint, TrustLevel } from "@darkbloom/protocol/provider/v1";
import { wipe } from "@darkbloom/protocol/sealed-box";
import type { Billing } from "../billing/billing.js";
import { completedCharge, cost, FREE, type ModelPrice, worstCase } from "../billing/pricing.js";
import { type TokenCounter, UsageMeter } from "../billing/usage-meter.js";
import type { CoordinatorConfig } from "../config.js";
import {
  ApiError,
  contextLengthExceeded,
  invalidRequest,
  modelNotFound,
  serviceUnavailable,
} from "../errors/index.js";
import type { Logger } from "../log.js";
import type { CoordinatorMetrics } from "../metrics.js";
import type { ProviderPool } from "../routing/provider-pool.js";
import { runAttempt } from "./attempt.js";
import { type EmbeddingsResult, serveEmbeddings } from "./embeddings.js";
import type { ValidatedEmbeddings } from "./embeddings-request.js";
import type { CatalogView, InferenceJob } from "./inference-job.js";
import { MeteredSink } from "./metered-sink.js";
import type { ValidatedRequest } from "./request-validation.js";
import { RequestStopped, type ResponseSink } from "./response-sink.js";
import { routeWithRetries } from "./routing-loop.js";
import type { RoutingPreferences } from "./routing-preferences.js";
import type { Timing } from "./timing.js";
import type { TimingLog } from "./timing-log.js";
import { ToolCallSink, toolOutputContext } from "./tool-calls.js";

export type { CatalogView, InferenceJob };

export interface PipelineDeps {
  config: CoordinatorConfig;
  /** This replica's providers, or with forwarding the cluster's. */
  providers: ProviderPool;
  /** Synchronous view of the model catalog (served from memory). */
  catalog: CatalogView;
  metrics: CoordinatorMetrics;
  log: Logger;
  /** Absent when billing is switched off (benchmarks of the bare serving path). */
  billing?: Billing | undefined;
  /** Where settled requests' X-Timing phases go (the account's usage shows them); absent with billing. */
  timings?: TimingLog | undefined;
}

/**
 * The request path after authentication: model lookup and context gate (prepare), then routing,
 * dispatch and invisible retries (run). Both the OpenAI HTTP routes and the Connect inference
 * service go through it.
 */
export class InferencePipeline {
  private readonly minTrust: TrustLevel;
  /** Requests between execute() and their settlement. */
  private active = 0;

  constructor(private readonly deps: PipelineDeps) {
    this.minTrust = parseTrustLevelName(deps.config.minTrustLevel) ?? TrustLevel.NONE;
  }

  /**
   * Resolves the model and the token budget; throws 404 or 400 context_length_exceeded. Preferences
   * can only narrow routing: a requested minimum trust below the coordinator's has no effect.
   */
  prepare(
    requestId: string,
    accountId: string,
    request: ValidatedRequest,
    timing: Timing,
    preferences: RoutingPreferences = {},
  ): InferenceJob {
    const { providers, catalog, config } = this.deps;
    const served = providers.serves(request.model);
    const entry = catalog.lookup(request.model);
    if (!served && !entry?.enabled) throw modelNotFound(request.model);
    if (entry && !entry.enabled) throw modelNotFound(request.model);
    if (catalog.tokenizer?.(request.model)?.embeddingModel) {
      throw invalidRequest(
        `The model '${request.model}' is an embedding model; it serves /v1/embeddings, not completions.`,
        "model",
      );
    }

    const promptTokens = request.promptTokens;
    // The context gate: the largest context any connected provider of the model serves.
    const limit = providers.contextLimit(request.model);
    const param = request.endpoint === Endpoint.COMPLETIONS ? "prompt" : "messages";
    let maxTokens = request.maxTokens ?? config.defaultMaxTokens;
    if (served) {
      if (promptTokens >= limit) throw contextLengthExceeded(promptTokens + 1, limit, param);
      if (request.maxTokens === undefined) maxTokens = Math.min(maxTokens, limit - promptTokens);
      else if (promptTokens + maxTokens > limit) {
        throw contextLengthExceeded(promptTokens + maxTokens, limit, param);
      }
    }
    return {
      requestId,
      accountId,
      request,
      maxTokens,
      promptTokens,
      counter: undefined,
      promptCount: undefined,
      demand: { model: request.model, promptTokens, maxTokens },
      constraints: {
        minTrust: Math.max(this.minTrust, preferences.minTrust ?? TrustLevel.NONE),
        allow: preferences.allow,
        exclude: preferences.exclude,
        features: request.features,
      },
      timing,
    };
  }

  /**
   * The prompt counted with the model's tokenizer, when the catalog has it. Counting fails only when a
   * template cannot render the request (it is the provider's template too) or the tokenizer workers
   * do not answer; the request is then metered by the bounds.
   */
  private countPrompt(job: InferenceJob, counter: TokenCounter): number | Promise<number | undefined> {
    const failed = (e: unknown) => {
      this.deps.log.warn(
        { requestId: job.requestId, model: job.request.model, err: (e as Error).message },
        "the prompt could not be counted; this request's usage is only bounded",
      );
      return undefined;
    };
    if (counter.countPromptNow) {
      try {
        return counter.countPromptNow(job.request.input);
      } catch (e) {
        return Promise.resolve(failed(e));
      }
    }
    return counter.countPrompt(job.request.input).catch(failed);
  }

  /**
   * Serves a prepared job with billing around it: reserves the worst case (402 when the balance
   * cannot cover it), meters what reaches the consumer (each attempt's UsageMeter accepts only the
   * provider's usage that equals the coordinator's count, or without the model's vocabulary that
   * the text it delivered bears out, and cuts the provider otherwise), and settles: completed
   * requests pay their accepted usage, failed ones only the tokens of the text delivered (nothing
   * when none was), cancelled ones what was delivered or, once a provider accepted the request, at
   * least its prompt.
   */
  async execute(job: InferenceJob, sink: ResponseSink, signal: AbortSignal): Promise<void> {
    this.active++;
    try {
      await this.serve(job, sink, signal);
    } finally {
      this.active--;
    }
  }

  /**
   * Serves an embeddings request (embeddings.ts): the embeddings, or undefined when the consumer left;
   * throws ApiError for what the consumer is told instead.
   */
  async embed(
    requestId: string,
    accountId: string,
    request: ValidatedEmbeddings,
    timing: Timing,
    preferences: RoutingPreferences,
    signal: AbortSignal,
  ): Promise<EmbeddingsResult | undefined> {
    this.active++;
    try {
      return await serveEmbeddings(this.deps, requestId, accountId, request, timing, preferences, signal);
    } finally {
      this.active--;
    }
  }

  /**
   * Resolves once no request is being served, or at the deadline: a replica shutting down lets its
   * consumers' requests finish, those served by other replicas' providers included.
   */
  async quiesce(deadlineMs: number): Promise<void> {
    const until = Date.now() + deadlineMs;
    while (this.active > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 25));
  }

  private async serve(job: InferenceJob, sink: ResponseSink, signal: AbortSignal): Promise<void> {
    const { billing } = this.deps;
    const price = this.deps.catalog.lookup(job.request.model) ?? FREE;
    const hold = worstCase(price, job.request.promptTokenBound, job.maxTokens, job.request.n);
    // Counted (off the event loop) while the request is served: the hold is the prompt's bound, and
    // the count is needed only when the provider reports its usage.
    const counter = this.deps.catalog.tokenizer?.(job.request.model);
    job.counter = counter;
    // Counted usage is served only by daemons that report the count (not the tokens they sampled).
    if (counter) job.constraints = { ...job.constraints, countedUsage: true };
    if (job.request.tools) {
      const tools = toolOutputContext(job, counter);
      if (tools instanceof ApiError) return sink.fail(tools);
      job.tools = tools;
      sink = new ToolCallSink(sink, tools);
    }
    job.promptCount = counter && this.countPrompt(job, counter);
    if (billing) {
      const t = performance.now();
      try {
        await billing.reserve(job.requestId, job.accountId, job.request.model, hold);
      } catch (e) {
        if (!(e instanceof ApiError))
          this.deps.log.error({ err: e, requestId: job.requestId }, "reservation failed");
        sink.fail(
          e instanceof ApiError
            ? e
            : serviceUnavailable("Billing is unavailable; retry shortly.", "billing_unavailable"),
        );
        return;
      }
      job.timing.add("reserve", t);
    }
    const meter = new MeteredSink(sink);
    try {
      await this.run(job, meter, signal);
    } finally {
      // The consumer's plaintext is no longer needed (strings parsed from it cannot be wiped).
      wipe(job.request.body);
      if (billing) await this.settle(billing, job, meter, price, consumerCancelled(signal));
      this.deps.timings?.record(job.requestId, job.timing.phases());
    }
  }

  private async settle(
    billing: Billing,
    job: InferenceJob,
    meter: MeteredSink,
    price: ModelPrice,
    byConsumer: boolean,
  ): Promise<void> {
    const estimate = (await job.promptCount) ?? job.promptTokens;
    let charge = 0n;
    let promptTokens = 0;
    let completionTokens = 0;
    const outcome = meter.outcome;
    // What reached the consumer of a response that did not complete (counted only then: tokenizing
    // is the cost). A non-streaming response that failed delivered nothing, whatever was produced.
    const delivered = outcome.kind !== "completed" && meter.streaming ? await meter.delivered() : 0;
    if (outcome.kind === "completed") {
      // The usage the consumer was shown: the provider's, accepted by the attempt's UsageMeter.
      promptTokens = outcome.result.promptTokens;
      completionTokens = outcome.result.completionTokens;
      charge = completedCharge(price, promptTokens, completionTokens);
    } else if (delivered > 0) {
      // Failed or cancelled after tokens reached the consumer: they pay for those tokens only.
      promptTokens = estimate;
      completionTokens = delivered;
      charge = cost(price, estimate, delivered);
    } else if (outcome.kind === "cancelled" && meter.dispatched && byConsumer) {
      // Cancelled after a provider took the request and before a token reached the consumer: the
      // provider prefilled the prompt, which is paid for (the coordinator's own count of it, or its
      // estimate without the model's vocabulary), so cancelling early cannot buy free prefill.
      promptTokens = estimate;
      charge = cost(price, estimate, 0);
    }
    const settlement = {
      chargeMicroUsd: charge,
      providerAccount: meter.provider?.payoutAccount ?? "platform:fees",
      promptTokens,
      completionTokens,
      outcome: outcome.kind,
    };
    await billing.settleOrDefer(job.requestId, settlement);
  }

  /** Routes and serves the job, retrying on another provider while nothing reached the consumer. */
  private async run(job: InferenceJob, sink: MeteredSink, signal: AbortSignal): Promise<void> {
    const routed = { ...job, model: job.request.model };
    const failure = await routeWithRetries(this.deps, routed, signal, (session, lease) => {
      const usage = new UsageMeter(
        { choices: job.request.n, maxTokens: job.maxTokens, promptTokenBound: job.request.promptTokenBound },
        job.counter,
      );
      sink.attempt(lease.provider, usage);
      return runAttempt(this.deps, session, job, sink, usage, signal, lease.provider.inFlight);
    });
    if (failure) sink.fail(failure);
  }
}

/** Whether the request was stopped by its consumer (it left or stopped reading), not by a limit on the response. */
function consumerCancelled(signal: AbortSignal): boolean {
  return !(signal.reason instanceof RequestStopped) || signal.reason.byConsumer;
}
