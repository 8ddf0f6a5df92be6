import type { InferenceComplete } from "@darkbloom/protocol/provider/v1";
import { sha256 } from "@darkbloom/protocol/verifiable-response";
import {
  type CountedUsage,
  confirmedCount,
  type UsageMeter,
  type Violation,
} from "../billing/usage-meter.js";
import type { CoordinatorConfig } from "../config.js";
import { type ApiError, providerError, unexpectedError } from "../errors/index.js";
import type { CallObserver } from "../link/provider-session.js";
import type { Logger } from "../log.js";
import type { CoordinatorMetrics } from "../metrics.js";
import type { DispatchTarget } from "../routing/provider-pool.js";
import { dispatchSealed } from "./dispatch.js";
import type { InferenceJob } from "./inference-job.js";
import { LOGPROBS_INVALID, LogprobsCollector } from "./logprobs-check.js";
import type { MeteredSink } from "./metered-sink.js";
import { providerErrorFrom } from "./provider-errors.js";
import { verifyResponse } from "./response-verification.js";
import { shownOutput } from "./shown-output.js";
import { estimateTokens } from "./token-estimate.js";

/**
 * `departed`: the provider went away (disconnected, drained, left the directory, or its replica
 * refused the forward) rather than failed the request: the retry may wait for one to (re)connect.
 */
export type AttemptOutcome = { kind: "done" } | { kind: "retry"; reason: string; departed?: boolean };

/** What an attempt needs of the pipeline's dependencies. */
export interface AttemptDeps {
  config: CoordinatorConfig;
  metrics: CoordinatorMetrics;
  log: Logger;
}

export function runAttempt(
  deps: AttemptDeps,
  session: DispatchTarget,
  job: InferenceJob,
  sink: MeteredSink,
  usage: UsageMeter,
  signal: AbortSignal,
  rows: number,
): Promise<AttemptOutcome> {
  const { config, log } = deps;
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
    // A provider whose output breaks what the request asked is untrusted (and cut, while it still
    // streams); another serves the request while nothing reached the consumer.
    const untrust = (code: string, message: string, consumerMessage: string, streaming = true) => {
      if (streaming) session.cancel(requestId, code);
      failOrRetry(`provider untrusted: ${code}`, providerError(consumerMessage, "provider_output_invalid"));
      session.markUntrusted(code, message);
    };
    const logprobs =
      request.logprobs === undefined ? undefined : new LogprobsCollector(request.logprobs, n, job.maxTokens);

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
      deps.metrics.metering.inc({ model: request.model, mode });
      const accepted = usage.complete(message.usage, counted);
      if ("violation" in accepted) {
        cut(accepted.violation);
        return;
      }
      job.requestSha256 ??= sha256(request.body);
      // Exactly the choices 0..n-1 (a provider may not invent choices), as they are presented.
      const finishReasons = new Map<number, string>();
      for (const c of message.choices) if (c.index < n) finishReasons.set(c.index, c.finishReason || "stop");
      for (let i = 0; i < n; i++) if (!finishReasons.has(i)) finishReasons.set(i, "stop");
      const output = shownOutput(request, job.tools, usage.texts, finishReasons);
      if (!output.ok) {
        untrust(output.code, output.message, output.consumerMessage, false);
        return;
      }
      if (logprobs) {
        output.choices = output.choices.map((c, i) => ({ ...c, logprobs: logprobs.choices[i] ?? [] }));
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
    // A fault of the coordinator's own while concluding off the event loop's turn: the request
    // fails (its consumer is told) instead of hanging, and nothing escapes as an unhandled rejection.
    const concludeFailed = (e: unknown) => {
      log.error({ requestId, err: e }, "concluding the response failed");
      if (finished) return;
      sink.fail(unexpectedError(e));
      finish({ kind: "done" });
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
        // Entries nobody asked for are dropped unchecked: never shown, never signed.
        if (!logprobs && payload.logprobs.length > 0) payload.logprobs = [];
        const problem = logprobs?.chunk(payload.choiceIndex, payload.text, payload.logprobs);
        if (problem !== undefined) {
          untrust(LOGPROBS_INVALID, problem, "The provider's log-probabilities could not be a model's.");
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
            return confirmedCount(counter, request.input, texts, job.maxTokens, message.usage, {
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
          )
          .catch((e: unknown) => concludeFailed(e));
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
    signal.addEventListener("abort", onAbort, { once: true });
    const undelivered = dispatchSealed(
      session,
      config.requireEncryption,
      timing,
      {
        requestId,
        model: request.model,
        endpoint: request.endpoint,
        body: request.body,
        maxTokens: job.maxTokens,
        stream: request.stream,
        promptTokensEstimate: job.promptTokens,
      },
      observer,
    );
    if (undelivered) finish(undelivered);
  });
}
