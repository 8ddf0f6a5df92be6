import { Endpoint } from "@darkbloom/protocol/provider/v1";
import type { Authenticator } from "../../auth/authenticator.js";
import type { RateLimiter } from "../../auth/rate-limiter.js";
import type { CoordinatorConfig } from "../../config.js";
import { isApiError, unexpectedError } from "../../errors/index.js";
import type { InferencePipeline } from "../../inference/pipeline.js";
import { validateRequest } from "../../inference/request-validation.js";
import { RequestStopped } from "../../inference/response-sink.js";
import { readRoutingPreferences } from "../../inference/routing-preferences.js";
import { Timing } from "../../inference/timing.js";
import type { Logger } from "../../log.js";
import type { CoordinatorMetrics } from "../../metrics.js";
import { readBody } from "../body.js";
import type { CutReason } from "../bounded-writer.js";
import { JsonResponse } from "../json-response.js";
import { KeepAliveScheduler } from "../keep-alive.js";
import { ChunkFormatter } from "../openai-format.js";
import { newRequestId } from "../request-id.js";
import { sendError } from "../respond.js";
import { SseResponse } from "../sse-response.js";
import type { Handler } from "../types.js";

export interface CompletionHandlerDeps {
  config: CoordinatorConfig;
  auth: Authenticator;
  rateLimiter: RateLimiter;
  pipeline: InferencePipeline;
  metrics: CoordinatorMetrics;
  log: Logger;
}

const ENDPOINT_LABEL = {
  [Endpoint.CHAT_COMPLETIONS]: "chat_completions",
  [Endpoint.COMPLETIONS]: "completions",
} as const;

/** POST /v1/chat/completions and POST /v1/completions: one handler, two body formats. */
export function completionsHandler(
  endpoint: Endpoint.CHAT_COMPLETIONS | Endpoint.COMPLETIONS,
  deps: CompletionHandlerDeps,
): Handler {
  const { config, auth, rateLimiter, pipeline, metrics, log } = deps;
  const label = ENDPOINT_LABEL[endpoint];
  const keepAlive = new KeepAliveScheduler(config.keepAliveIntervalMs);
  return async (req, res) => {
    const timing = new Timing();
    const requestId = newRequestId();
    let baseHeaders: Record<string, string> = { "X-Request-ID": requestId };
    const abort = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) abort.abort(new Error("consumer disconnected"));
    });
    // A response cut by a limit (a consumer too slow, a response too large) cancels the provider as a
    // disconnect does; the request is then settled as a cancelled one.
    const cut = (reason: CutReason) => {
      metrics.connectionLimits.inc({ limit: reason });
      // Too large is the response's doing; too slow to read, the consumer's.
      if (!abort.signal.aborted)
        abort.abort(new RequestStopped(`response cut: ${reason}`, reason !== "response_bytes"));
    };
    let model = "";
    let stream = false;
    try {
      let t = performance.now();
      const principal = await auth.authenticateRequest(req);
      baseHeaders = { ...baseHeaders, ...rateLimiter.take(principal.accountId) };
      t = timing.add("auth", t);
      const body = await readBody(req, config.bodyLimitBytes);
      const request = validateRequest(endpoint, body);
      model = request.model;
      stream = request.stream;
      timing.add("parse", t);
      const preferences = readRoutingPreferences((name) => req.headers[name]);
      const job = pipeline.prepare(requestId, principal.accountId, request, timing, preferences);
      if (request.stream) {
        const sse = new SseResponse(
          res,
          new ChunkFormatter(
            endpoint,
            requestId,
            request.model,
            request.includeUsage,
            request.logprobs !== undefined,
          ),
          timing,
          baseHeaders,
          keepAlive,
          config,
        );
        sse.onCut = cut;
        sse.onFirstToken = () =>
          metrics.firstTokenLatency.observe({ model }, (performance.now() - timing.startedAt) / 1000);
        abort.signal.addEventListener("abort", () => sse.abandon(), { once: true });
        await pipeline.execute(job, sse, abort.signal);
        metrics.tokens.inc({ model }, sse.delivered);
      } else {
        const json = new JsonResponse(
          res,
          endpoint,
          requestId,
          request.model,
          request.n,
          timing,
          baseHeaders,
          config,
        );
        json.onCut = cut;
        await pipeline.execute(job, json, abort.signal);
        metrics.tokens.inc({ model }, json.delivered);
      }
    } catch (e) {
      const error = isApiError(e) ? e : unexpectedError(e);
      if (error.status === 503) log.warn({ err: e, requestId }, "request failed: database unavailable");
      else if (!isApiError(e)) log.error({ err: e, requestId }, "request failed unexpectedly");
      sendError(res, error, { ...baseHeaders, "X-Timing": timing.header() });
    } finally {
      const status = abort.signal.aborted ? "499" : String(res.statusCode);
      metrics.requests.inc({ endpoint: label, model: model || "-", status });
      metrics.requestDuration.observe(
        { endpoint: label, stream: String(stream) },
        (performance.now() - timing.startedAt) / 1000,
      );
      log.debug(
        { requestId, endpoint: label, model, status, timing: timing.get("total") },
        "request finished",
      );
    }
  };
}
