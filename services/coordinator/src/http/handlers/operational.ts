import { constantTimeEqual } from "../../accounts/api-key.js";
import type { FailedAuthLimiter } from "../../auth/failed-auth-limiter.js";
import { invalidApiKey, isApiError } from "../../errors/index.js";
import type { CoordinatorMetrics } from "../../metrics.js";
import { newRequestId } from "../request-id.js";
import { sendError, sendJson } from "../respond.js";
import type { Handler, HttpRequest } from "../types.js";

/** GET /healthz: the process is up. */
export function healthHandler(): Handler {
  return (_req, res) => sendJson(res, 200, { status: "ok" });
}

/** GET /readyz: the database answers and the coordinator is not shutting down. */
export function readinessHandler(check: () => Promise<{ ready: boolean; reason?: string }>): Handler {
  return async (_req, res) => {
    const r = await check().catch((e: unknown) => ({
      ready: false,
      reason: e instanceof Error ? e.message : String(e),
    }));
    sendJson(
      res,
      r.ready ? 200 : 503,
      r.ready ? { status: "ready" } : { status: "not_ready", reason: r.reason },
    );
  };
}

export interface MetricsAccess {
  /** The bearer token a scrape must carry; undefined serves everyone who reaches the listener. */
  token: string | undefined;
  /** Wrong tokens count as failed authentication of the client's address. */
  failures: FailedAuthLimiter;
  addressOf: (req: HttpRequest) => string;
}

/**
 * GET /metrics: Prometheus text format. With a token, a scrape without `Authorization: Bearer
 * <token>` gets 401 in OpenAI's error shape (and repeated wrong tokens 429, like bad API keys).
 */
export function metricsHandler(metrics: CoordinatorMetrics, access: MetricsAccess): Handler {
  return async (req, res) => {
    if (access.token !== undefined) {
      const headers = { "X-Request-ID": newRequestId() };
      const presented = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "")?.[1];
      if (presented === undefined) {
        return sendError(
          res,
          invalidApiKey("GET /metrics needs the metrics token: send 'Authorization: Bearer <token>'."),
          headers,
        );
      }
      const address = access.addressOf(req);
      try {
        access.failures.take(address);
      } catch (e) {
        if (isApiError(e)) return sendError(res, e, headers);
        throw e;
      }
      if (!constantTimeEqual(presented, access.token)) {
        return sendError(res, invalidApiKey("Incorrect metrics token provided."), headers);
      }
      access.failures.refund(address);
    }
    const body = await metrics.registry.metrics();
    res.writeHead(200, {
      "content-type": metrics.registry.contentType,
      "content-length": Buffer.byteLength(body),
    });
    res.end(body);
  };
}
