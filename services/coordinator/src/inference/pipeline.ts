import type { MessageInitShape } from "@bufbuild/protobuf";
import { parseTrustLevelName } from "@darkbloom/protocol";
import {
  Endpoint,
  type InferenceError,
  type InferenceRequestSchema,
  TrustLevel,
} from "@darkbloom/protocol/provider/v1";
import { SealedBoxError, wipe } from "@darkbloom/protocol/sealed-box";
import { sha256 } from "@darkbloom/protocol/verifiable-response";
import type { Billing } from "../billing/billing.js";
import { MeteredSink } from "../billing/metered-sink.js";
import {
  completedCharge,
  cost,
  FREE,
  type ModelPrice,
  promptTokenBound,
  worstCase,
} from "../billing/pricing.js";
import type { CoordinatorConfig } from "../config.js";
import {
  ApiError,
  contextLengthExceeded,
  modelNotFound,
  providerError,
  serviceUnavailable,
} from "../errors/index.js";
import type { CallObserver, ProviderSession } from "../link/provider-session.js";
import type { SessionManager } from "../link/session-manager.js";
import type { Logger } from "../log.js";
import type { CoordinatorMetrics } from "../metrics.js";
import type { RouteDemand } from "../routing/cost-model.js";
import type { ProviderRegistry } from "../routing/provider-registry.js";
import type { Router } from "../routing/router.js";
import type { RouteConstraints } from "../routing/scheduler.js";
import type { ValidatedRequest } from "./request-validation.js";
import type { ResponseSink } from "./response-sink.js";
import { verifyResponse } from "./response-verification.js";
import type { RoutingPreferences } from "./routing-preferences.js";
import { type SealedRequest, sealRequest } from "./sealing.js";
import type { Timing } from "./timing.js";

/** A request ready to route: validated, authenticated, with its token budget fixed. */
export interface InferenceJob {
  requestId: string;
  accountId: string;
  request: ValidatedRequest;
  /** Completion-token budget per choice enforced for this request. */
  maxTokens: number;
  demand: RouteDemand;
  constraints: RouteConstraints;
  timing: Timing;
  /** SHA-256 of request.body, computed once when the first provider completes. */
  requestSha256?: Uint8Array;
}

/** What the pipeline needs of the model catalog: an in-memory lookup of state and prices. */
export interface CatalogView {
  lookup(modelId: string): ({ enabled: boolean } & ModelPrice) | undefined;
}

type AttemptOutcome = { kind: "done" } | { kind: "retry"; reason: string };

export interface PipelineDeps {
  config: CoordinatorConfig;
  registry: ProviderRegistry;
  router: Router;
  sessions: SessionManager;
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
    const { registry, catalog, config } = this.deps;
    const providers = registry.serving(request.model);
    const entry = catalog.lookup(request.model);
    if (providers.size === 0 && !entry?.enabled) throw modelNotFound(request.model);
    if (entry && !entry.enabled) throw modelNotFound(request.model);

    // The context gate: the largest context any connected provider of the model serves.
    const limit = registry.contextLimit(request.model);
    const param = request.endpoint === Endpoint.COMPLETIONS ? "prompt" : "messages";
    let maxTokens = request.maxTokens ?? config.defaultMaxTokens;
    if (providers.size > 0) {
      if (request.promptTokens >= limit) throw contextLengthExceeded(request.promptTokens + 1, limit, param);
      if (request.maxTokens === undefined) maxTokens = Math.min(maxTokens, limit - request.promptTokens);
      else if (request.promptTokens + maxTokens > limit) {
        throw contextLengthExceeded(request.promptTokens + maxTokens, limit, param);
      }
    }
    return {
      requestId,
      accountId,
      request,
      maxTokens,
      demand: { model: request.model, promptTokens: request.promptTokens, maxTokens },
      constraints: {
        minTrust: Math.max(this.minTrust, preferences.minTrust ?? TrustLevel.NONE),
        allow: preferences.allow,
        exclude: preferences.exclude,
      },
      timing,
    };
  }

  /**
   * Serves a prepared job with billing around it: reserves the worst case (402 when the balance
   * cannot cover it), meters what reaches the consumer (cutting a response that would exceed the
   * reservation), and settles: completed requests pay actual usage clamped to the hold, failed or
   * cancelled ones only the tokens delivered (nothing when none was).
   */
  async execute(job: InferenceJob, sink: ResponseSink, signal: AbortSignal): Promise<void> {
    const { billing } = this.deps;
    const price = this.deps.catalog.lookup(job.request.model) ?? FREE;
    const hold = worstCase(price, job.request.promptTokens, job.maxTokens, job.request.n);
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
    const cut = new AbortController();
    const meter = new MeteredSink(sink, job.maxTokens * job.request.n, () =>
      cut.abort(new Error("reservation exhausted")),
    );
    try {
      await this.run(job, meter, AbortSignal.any([signal, cut.signal]));
    } finally {
      // The consumer's plaintext is no longer needed (strings parsed from it cannot be wiped).
      wipe(job.request.body);
      if (billing) await this.settle(billing, job, meter, price, hold);
    }
  }

  private async settle(
    billing: Billing,
    job: InferenceJob,
    meter: MeteredSink,
    price: ModelPrice,
    hold: bigint,
  ): Promise<void> {
    const estimate = job.request.promptTokens;
    let charge = 0n;
    let promptTokens = 0;
    const outcome = meter.outcome;
    if (outcome.kind === "completed") {
      // A provider's prompt count is believed up to the bound the reservation covered.
      promptTokens = Math.min(Math.max(0, outcome.result.promptTokens), promptTokenBound(estimate));
      charge = completedCharge(price, promptTokens, meter.delivered);
    } else if (outcome.kind === "cut") {
      promptTokens = estimate;
      charge = hold;
    } else if (meter.streaming && meter.delivered > 0) {
      // Failed or cancelled after tokens reached the consumer: they pay for those tokens only. A
      // non-streaming response that failed delivered nothing, whatever the provider produced.
      promptTokens = estimate;
      charge = cost(price, estimate, meter.delivered);
    }
    const settlement = {
      chargeMicroUsd: charge,
      providerAccount: meter.provider?.payoutAccount ?? "platform:fees",
      promptTokens,
      completionTokens: meter.delivered,
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
  async run(job: InferenceJob, sink: ResponseSink, signal: AbortSignal): Promise<void> {
    const { router, sessions, config, metrics } = this.deps;
    const exclude = new Set<string>(job.constraints.exclude);
    let lastFailure = "";
    for (let attempt = 0; attempt <= config.maxRetries; attempt++) {
      const constraints: RouteConstraints = { ...job.constraints, exclude };
      if (attempt > 0 && !router.hasEligibleProvider(job.demand, constraints)) break;
      const routeStart = performance.now();
      let lease: Awaited<ReturnType<Router["acquire"]>>;
      try {
        lease = await router.acquire(job.demand, constraints, signal);
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
      const session = sessions.get(lease.provider.id);
      if (!session) {
        lease.release();
        exclude.add(lease.provider.id);
        continue;
      }
      sink.attempt(lease.provider);
      metrics.inFlight.inc();
      let outcome: AttemptOutcome;
      try {
        outcome = await this.attempt(session, job, sink, signal);
      } finally {
        metrics.inFlight.dec();
        lease.release();
      }
      if (outcome.kind === "done") return;
      exclude.add(lease.provider.id);
      lastFailure = outcome.reason;
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
    session: ProviderSession,
    job: InferenceJob,
    sink: ResponseSink,
    signal: AbortSignal,
  ): Promise<AttemptOutcome> {
    const { config } = this.deps;
    const { timing, requestId } = job;
    const n = job.request.n;
    return new Promise<AttemptOutcome>((resolve) => {
      let finished = false;
      let sawChunk = false;
      /** Each choice's text as received (after opening): what the response signature must cover. */
      const texts: string[] = Array.from({ length: n }, () => "");
      const dispatchedAt = performance.now();
      const finish = (outcome: AttemptOutcome) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        resolve(outcome);
      };
      // Failure after the consumer saw bytes is reported in-band; before, the pipeline retries.
      const failOrRetry = (reason: string, error: ApiError) => {
        if (sink.committed) {
          sink.fail(error);
          finish({ kind: "done" });
        } else {
          finish({ kind: "retry", reason });
        }
      };
      const onAbort = () => {
        session.cancel(requestId, "consumer_disconnected");
        finish({ kind: "done" });
      };
      const onSilence = () => {
        const reason = sawChunk ? "provider_stalled" : "first_token_timeout";
        session.cancel(requestId, reason);
        failOrRetry(reason, providerError(`The provider stopped responding (${reason}).`));
      };
      let timer = setTimeout(onSilence, config.firstTokenTimeoutMs);
      timer.unref();

      const observer: CallObserver = {
        accepted() {
          timing.add("dispatch", dispatchedAt);
        },
        chunk(payload) {
          if (payload.choiceIndex >= n) return; // a provider may not invent choices
          texts[payload.choiceIndex] += payload.text;
          if (sawChunk) {
            timer.refresh();
          } else {
            sawChunk = true;
            timing.add("provider_first_token", dispatchedAt);
            // After the first token the silence limit is the inter-token one.
            clearTimeout(timer);
            timer = setTimeout(onSilence, config.interTokenTimeoutMs);
            timer.unref();
          }
          sink.chunk(payload);
        },
        complete(message) {
          job.requestSha256 ??= sha256(job.request.body);
          // Exactly the choices 0..n-1 (a provider may not invent choices), as they are presented.
          const finishReasons = new Map<number, string>();
          for (const c of message.choices)
            if (c.index < n) finishReasons.set(c.index, c.finishReason || "stop");
          for (let i = 0; i < n; i++) if (!finishReasons.has(i)) finishReasons.set(i, "stop");
          const result = {
            promptTokens: message.usage?.promptTokens ?? job.request.promptTokens,
            completionTokens: message.usage?.completionTokens ?? 0,
            finishReasons,
          };
          // The signature must cover exactly what the consumer is shown.
          const verdict = verifyResponse(
            session.handle,
            session.signingKey,
            job.requestSha256,
            job.request.model,
            texts,
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
          sink.complete({ ...result, proof: verdict.proof });
        },
        error(message) {
          if (message.retryable && !sink.committed) {
            finish({ kind: "retry", reason: message.code || "provider_error" });
            return;
          }
          sink.fail(providerErrorFrom(message));
          finish({ kind: "done" });
        },
        lost(reason) {
          failOrRetry(reason, providerError(`The provider disconnected mid-response (${reason}).`));
        },
      };
      // Sealed to the provider's key with a fresh ephemeral key pair; plaintext only to a provider
      // without a key, which a coordinator that requires encryption never registers.
      let sealed: SealedRequest | undefined;
      if (session.encryptionKey.byteLength > 0 || config.requireEncryption) {
        const sealStart = performance.now();
        try {
          sealed = sealRequest(session.encryptionKey, job.request.body);
        } catch (e) {
          const message = e instanceof SealedBoxError ? e.message : "the request could not be sealed";
          finish({ kind: "retry", reason: "bad_encryption_key" });
          session.markUntrusted("bad_encryption_key", message);
          return;
        }
        timing.add("encrypt", sealStart);
      }
      const request: MessageInitShape<typeof InferenceRequestSchema> = {
        requestId,
        model: job.request.model,
        endpoint: job.request.endpoint,
        body: sealed
          ? { case: "sealedBody", value: sealed.box }
          : { case: "plaintextBody", value: job.request.body },
        maxTokens: job.maxTokens,
        stream: job.request.stream,
        promptTokensEstimate: job.request.promptTokens,
      };
      signal.addEventListener("abort", onAbort, { once: true });
      if (!session.dispatch(request, observer, sealed?.key)) {
        sealed?.key.wipe();
        finish({ kind: "retry", reason: "stream_closed" });
      }
    });
  }
}

/** Maps a provider's InferenceError to what the consumer sees: client errors pass through. */
function providerErrorFrom(e: InferenceError): ApiError {
  if (e.httpStatus >= 400 && e.httpStatus < 500 && e.httpStatus !== 408 && e.httpStatus !== 429) {
    return new ApiError({
      status: e.httpStatus,
      type: "invalid_request_error",
      code: e.code || "invalid_request_error",
      message: e.message || "The provider rejected the request.",
      param: e.code === "context_length_exceeded" ? "messages" : null,
    });
  }
  return providerError(
    e.message || "The provider failed to complete the request.",
    e.code || "provider_error",
  );
}
