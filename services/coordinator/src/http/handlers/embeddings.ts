import { isApiError, unexpectedError } from "../../errors/index.js";
import { validateEmbeddingsRequest } from "../../inference/embeddings-request.js";
import { readRoutingPreferences } from "../../inference/routing-preferences.js";
import { Timing } from "../../inference/timing.js";
import { readBody } from "../body.js";
import { embeddingsBody } from "../embeddings-format.js";
import { providerHeaders } from "../provider-headers.js";
import { newRequestId } from "../request-id.js";
import { sendError, sendJson } from "../respond.js";
import type { Handler } from "../types.js";
import type { CompletionHandlerDeps } from "./completions.js";

const LABEL = "embeddings";

/** POST /v1/embeddings: one JSON response, never streamed. */
export function embeddingsHandler(deps: CompletionHandlerDeps): Handler {
  const { config, auth, rateLimiter, pipeline, metrics, log } = deps;
  return async (req, res) => {
    const timing = new Timing();
    const requestId = newRequestId();
    let headers: Record<string, string> = { "X-Request-ID": requestId };
    const abort = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) abort.abort(new Error("consumer disconnected"));
    });
    let model = "";
    try {
      let t = performance.now();
      const principal = await auth.authenticateRequest(req);
      headers = { ...headers, ...rateLimiter.take(principal.accountId) };
      t = timing.add("auth", t);
      const request = validateEmbeddingsRequest(await readBody(req, config.bodyLimitBytes));
      model = request.model;
      timing.add("parse", t);
      const preferences = readRoutingPreferences((name) => req.headers[name]);
      const result = await pipeline.embed(
        requestId,
        principal.accountId,
        request,
        timing,
        preferences,
        abort.signal,
      );
      if (result === undefined) return; // the consumer left
      const body = embeddingsBody(request.model, result, request.encodingFormat);
      sendJson(res, 200, body, {
        ...headers,
        ...providerHeaders(result.provider),
        "X-Timing": timing.header(),
      });
    } catch (e) {
      const error = isApiError(e) ? e : unexpectedError(e);
      if (!isApiError(e)) log.error({ err: e, requestId }, "request failed unexpectedly");
      sendError(res, error, { ...headers, "X-Timing": timing.header() });
    } finally {
      const status = abort.signal.aborted ? "499" : String(res.statusCode);
      metrics.requests.inc({ endpoint: LABEL, model: model || "-", status });
      metrics.requestDuration.observe(
        { endpoint: LABEL, stream: "false" },
        (performance.now() - timing.startedAt) / 1000,
      );
    }
  };
}
