import type { MessageInitShape } from "@bufbuild/protobuf";
import { parseTrustLevelName } from "@darkbloom/protocol";
import {
  Endpoint,
  type InferenceComplete,
  type InferenceRequestSchema,
  TrustLevel,
} from "@darkbloom/protocol/provider/v1";
import { SealedBoxError, wipe } from "@darkbloom/protocol/sealed-box";
import { sha256 } from "@darkbloom/protocol/verifiable-response";
import type { Billing } from "../billing/billing.js";
import { completedCharge, cost, FREE, type ModelPrice, worstCase } from "../billing/pricing.js";
import {
  type CountedUsage,
  confirmedCount,
  type TokenCounter,
  UsageMeter,
  type Violation,
} from "../billing/usage-meter.js";
import type { CoordinatorConfig } from "../config.js";
import {
  ApiError,
  contextLengthExceeded,
  modelNotFound,
  providerError,
  serviceUnavailable,
} from "../errors/index.js";
import type { CallObserver } from "../link/provider-session.js";
import type { Logger } from "../log.js";
import type { CoordinatorMetrics } from "../metrics.js";
import type { DispatchTarget, ProviderPool } from "../routing/provider-pool.js";
import type { Lease } from "../routing/router.js";
import type { RouteConstraints } from "../routing/scheduler.js";
import type { CatalogView, InferenceJob } from "./inference-job.js";
import { MeteredSink } from "./metered-sink.js";
import { providerErrorFrom } from "./provider-errors.js";
import type { ValidatedRequest } from "./request-validation.js";
import { RequestStopped, type ResponseSink } from "./response-sink.js";
import { verifyResponse } from "./response-verification.js";
import type { RoutingPreferences } from "./routing-preferences.js";
import { type SealedRequest, sealRequest } from "./sealing.js";
import { shownOutput } from "./shown-output.js";
import type { Timing } from "./timing.js";
import { estimateTokens } from "./token-estimate.js";
import { ToolCallSink, toolOutputContext } from "./tool-calls.js";

export type { CatalogView, InferenceJob };

/**
 * `departed`: the provider went away (disconnected, drained, left the directory, or its replica
 * refused the forward) rather than failed the request: the retry may wait for one to (re)connect.
 */
type AttemptOutcome = { kind: "done" } | { kind: "retry"; reason: string; departed?: boolean };

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
}

/** Attempts to settle a request before handing it to billing to write once the database answers. */
const SETTLE_ATTEMPTS = 3;

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
    for (let attempt = 1; ; attempt++) {
      try {
        await billing.settle(job.requestId, settlement);
        return;
      } catch (e) {
        if (attempt >= SETTLE_ATTEMPTS) {
          // Written on a later billing heartbeat, once the database answers again.
          this.deps.log.warn(
            { err: e, requestId: job.requestId },
            "settlement failed; retried once the database answers",
          );
          billing.settleLater(job.requestId, settlement);
          return;
        }
        await new Promise((r) => setTimeout(r, 50 * attempt));
      }
    }
  }

  /** Routes and serves the job, retrying on another provider while nothing reached the consumer. */
  private async run(job: InferenceJob, sink: MeteredSink, signal: AbortSignal): Promise<void> {
    const { providers, config, metrics } = this.deps;
    const exclude = new Set<string>(job.constraints.exclude);
    let lastFailure = "";
    let departed = false;
    for (let attempt = 0; attempt <= config.maxRetries; attempt++) {
      const constraints: RouteConstraints = { ...job.constraints, exclude };
      // After a failure the request ends when no other provider could serve it. After a departure
      // (a rolling restart moves every provider of a model at once) it waits in the queue as a new
      // arrival would, for the provider to reconnect or another to come.
      if (attempt > 0 && !departed && !providers.hasEligibleProvider(job.demand, constraints)) break;
      const routeStart = performance.now();
      let lease: Lease;
      try {
        lease = await providers.acquire(job.demand, constraints, signal);
      } catch (e) {
        if (signal.aborted) return;
        sink.fail(e instanceof ApiError ? e : providerError("routing failed"));
        return;
      }
      job.timing.addMicros("queue", lease.queuedMicros);
      job.timing.addMicros(
        "route",
        Math.max(0, Math.round((performance.now() - routeStart) * 1000) - lease.queuedMicros),
      );
      lease.provider.noteUse(job.request.model);
      const session = providers.target(lease.provider);
      if (!session) {
        lease.release();
        exclude.add(lease.provider.id);
        continue;
      }
      const usage = new UsageMeter(
        { choices: job.request.n, maxTokens: job.maxTokens, promptTokenBound: job.request.promptTokenBound },
        job.counter,
      );
      sink.attempt(lease.provider, usage);
      metrics.inFlight.inc();
      let outcome: AttemptOutcome;
      try {
        outcome = await this.attempt(session, job, sink, usage, signal, lease.provider.inFlight);
      } finally {
        metrics.inFlight.dec();
        lease.release();
      }
      if (outcome.kind === "done") return;
      exclude.add(lease.provider.id);
      lastFailure = outcome.reason;
      departed = outcome.departed === true;
      metrics.retries.inc({ reason: outcome.reason });
      this.deps.log.info(
        { requestId: job.requestId, providerId: lease.provider.id, reason: outcome.reason },
        "retrying on another provider",
      );
    }
    sink.fail(
      providerError(
        `No provider could complete the request (last failure: ${lastFailure || "no eligible provider left"}).`,
      ),
    );
  }

  private attempt(
    session: DispatchTarget,
    job: InferenceJob,
    sink: MeteredSink,
    usage: UsageMeter,
    signal: AbortSignal,
    rows: number,
  ): Promise<AttemptOutcome> {
    const { config, log } = this.deps;
    const { timing, requestId, request } = job;
    const n = request.n;
    const provider = session.handle;
    return new Promise<AttemptOutcome>((resolve) => {
      let finished = false;
      let firstChunkAt = 0;
      let completedAt = 0;
      const dispatchedAt = performance.now();
      const finish = (outcome: AttemptOutcome) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        resolve(outcome);
      };
      // Failure after the consumer saw bytes is reported in-band; before, the pipeline retries.
      // Either way it counts against the provider's share of traffic.
      const failOrRetry = (reason: string, error: ApiError, departed = false) => {
        provider.performance.recordFailure();
        if (sink.committed) {
          sink.fail(error);
          finish({ kind: "done" });
        } else {
          finish({ kind: "retry", reason, departed });
        }
      };
      // A provider whose counts its text does not bear out is cut: the offending chunk or usage is
      // not delivered (what was delivered before it is all that is paid for), and it is untrusted.
      const cut = (violation: Violation) => {
        session.cancel(requestId, violation.code);
        failOrRetry(
          `provider untrusted: ${violation.code}`,
          providerError(
            "The provider's token counts did not match what it delivered; the response was stopped.",
            "provider_metering_violation",
          ),
        );
        session.markUntrusted(violation.code, violation.message);
      };
      const onAbort = () => {
        session.cancel(requestId, "consumer_disconnected");
        finish({ kind: "done" });
      };
      const onSilence = () => {
        const reason = firstChunkAt > 0 ? "provider_stalled" : "first_token_timeout";
        session.cancel(requestId, reason);
        failOrRetry(reason, providerError(`The provider stopped responding (${reason}).`));
      };
      let timer = setTimeout(onSilence, config.firstTokenTimeoutMs);
      timer.unref();

      /** Ends the attempt with the provider's completion, its texts counted (`counted`) or not. */
      const conclude = (message: InferenceComplete, counted: CountedUsage | undefined, recounted = false) => {
        if (finished) return; // ended meanwhile (the provider dropped, the consumer left)
        const mode =
          counted !== undefined
            ? recounted
              ? "recounted"
              : "counted"
            : usage.counted
              ? "count_failed"
              : "bounded";
        this.deps.metrics.metering.inc({ model: request.model, mode });
        const accepted = usage.complete(message.usage, counted);
        if ("violation" in accepted) {
          cut(accepted.violation);
          return;
        }
        job.requestSha256 ??= sha256(request.body);
        // Exactly the choices 0..n-1 (a provider may not invent choices), as they are presented.
        const finishReasons = new Map<number, string>();
        for (const c of message.choices)
          if (c.index < n) finishReasons.set(c.index, c.finishReason || "stop");
        for (let i = 0; i < n; i++) if (!finishReasons.has(i)) finishReasons.set(i, "stop");
        const output = shownOutput(request, job.tools, usage.texts, finishReasons);
        if (!output.ok) {
          failOrRetry(
            `provider untrusted: ${output.code}`,
            providerError(output.consumerMessage, "provider_output_invalid"),
          );
          session.markUntrusted(output.code, output.message);
          return;
        }
        // One usage: the provider's, equal to the meter's count (or within its bounds); the
        // signature must cover exactly it, and the choices as shown.
        const result = { ...accepted.usage, finishReasons: output.finishReasons, choices: output.choices };
        const verdict = verifyResponse(
          provider,
          session.signingKey,
          job.requestSha256,
          request.model,
          output.choices,
          result,
          message.signature,
        );
        if (!verdict.ok) {
          // Nothing unverifiable is presented as verified: retried while nothing reached the
          // consumer, else the stream ends with an error instead of the proof.
          failOrRetry(
            `provider untrusted: ${verdict.code}`,
            providerError("The provider's response failed verification.", "response_verification_failed"),
          );
          session.markUntrusted(verdict.code, verdict.message);
          return;
        }
        finish({ kind: "done" });
        // Routing times tokens the coordinator vouches for: its own counts, or without the model's
        // vocabulary its estimates from the text (the provider's usage, only bounded then, can
        // claim up to a token a byte, and would make an inflater look several times faster).
        const timed = counted ?? {
          promptTokens: job.promptTokens,
          completionTokens: usage.texts.reduce((sum, text) => sum + estimateTokens(text), 0),
        };
        provider.performance.recordCompletion({
          model: request.model,
          promptTokens: timed.promptTokens,
          tokensPerChoice: timed.completionTokens / n,
          firstTokenMs: firstChunkAt > 0 ? firstChunkAt - dispatchedAt : completedAt - dispatchedAt,
          decodeMs: firstChunkAt > 0 ? completedAt - firstChunkAt : 0,
          rows,
        });
        sink.complete({ ...result, proof: verdict.proof });
      };
      const observer: CallObserver = {
        // A forwarded request: the replica holding the provider's stream took it (the hop's cost).
        admitted() {
          timing.add("forward", dispatchedAt);
        },
        accepted() {
          timing.add("dispatch", dispatchedAt);
          sink.accepted();
        },
        chunk(payload) {
          const violation = usage.chunk(payload);
          if (violation) {
            cut(violation);
            return;
          }
          if (firstChunkAt > 0) {
            timer.refresh();
          } else {
            firstChunkAt = performance.now();
            timing.add("provider_first_token", dispatchedAt);
            // After the first token the silence limit is the inter-token one.
            clearTimeout(timer);
            timer = setTimeout(onSilence, config.interTokenTimeoutMs);
            timer.unref();
          }
          sink.chunk(payload);
        },
        complete(message) {
          // Nothing more is due from the provider; the texts are counted (off the event loop) before
          // the usage is checked, unless the attempt ends meanwhile.
          clearTimeout(timer);
          completedAt = performance.now();
          const promptCount = job.promptCount;
          if (!usage.counted || promptCount === undefined) {
            conclude(message, undefined);
            return;
          }
          const counter = job.counter;
          // Counted at once (the port) and agreed with: no promise between the count and the verdict.
          const delivered = typeof promptCount === "number" ? usage.countDeliveredNow() : undefined;
          if (
            delivered !== undefined &&
            message.usage?.promptTokens === promptCount &&
            message.usage.completionTokens === delivered
          ) {
            conclude(message, { promptTokens: promptCount as number, completionTokens: delivered });
            return;
          }
          Promise.all([promptCount, delivered ?? usage.countDelivered()])
            .then(async ([promptTokens, completionTokens]) => {
              if (promptTokens === undefined || counter === undefined)
                return { counted: undefined, recounted: false };
              const texts = usage.texts;
              return confirmedCount(counter, request.input, texts, message.usage, {
                promptTokens,
                completionTokens,
              });
            })
            .then(
              ({ counted, recounted }) => conclude(message, counted, recounted),
              (e: Error) => {
                log.warn(
                  { requestId, err: e.message },
                  "the completion could not be counted; this response's usage is only bounded",
                );
                conclude(message, undefined);
              },
            );
        },
        error(message) {
          // A provider refusing a bad request (4xx other than timeouts and rate limits) is not its fault.
          const clientError = message.httpStatus >= 400 && message.httpStatus < 500;
          if (!clientError || message.httpStatus === 408 || message.httpStatus === 429) {
            provider.performance.recordFailure();
          }
          if (message.retryable && !sink.committed) {
            // 503: it could not take the request now (draining, or its replica refused the forward).
            const departed = message.httpStatus === 503;
            finish({ kind: "retry", reason: message.code || "provider_error", departed });
            return;
          }
          sink.fail(providerErrorFrom(message));
          finish({ kind: "done" });
        },
        lost(reason) {
          failOrRetry(reason, providerError(`The provider disconnected mid-response (${reason}).`), true);
        },
      };
      // Sealed to the provider's key with a fresh ephemeral key pair; plaintext only to a provider
      // without a key, which a coordinator that requires encryption never registers.
      let sealed: SealedRequest | undefined;
      if (session.encryptionKey.byteLength > 0 || config.requireEncryption) {
        const sealStart = performance.now();
        try {
          sealed = sealRequest(session.encryptionKey, request.body);
        } catch (e) {
          const message = e instanceof SealedBoxError ? e.message : "the request could not be sealed";
          finish({ kind: "retry", reason: "bad_encryption_key" });
          session.markUntrusted("bad_encryption_key", message);
          return;
        }
        timing.add("encrypt", sealStart);
      }
      const inferenceRequest: MessageInitShape<typeof InferenceRequestSchema> = {
        requestId,
        model: request.model,
        endpoint: request.endpoint,
        body: sealed
          ? { case: "sealedBody", value: sealed.box }
          : { case: "plaintextBody", value: request.body },
        maxTokens: job.maxTokens,
        stream: request.stream,
        promptTokensEstimate: job.promptTokens,
      };
      signal.addEventListener("abort", onAbort, { once: true });
      if (!session.dispatch(inferenceRequest, observer, sealed?.key)) {
        sealed?.key.wipe();
        finish({ kind: "retry", reason: "stream_closed", departed: true });
      }
    });
  }
}

/** Whether the request was stopped by its consumer (it left or stopped reading), not by a limit on the response. */
function consumerCancelled(signal: AbortSignal): boolean {
  return !(signal.reason instanceof RequestStopped) || signal.reason.byConsumer;
}
