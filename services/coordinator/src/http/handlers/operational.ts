import type { CoordinatorMetrics } from "../../metrics.js";
import { sendJson } from "../respond.js";
import type { Handler } from "../types.js";

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

/** GET /metrics: Prometheus text format. */
export function metricsHandler(metrics: CoordinatorMetrics): Handler {
  return async (_req, res) => {
    const body = await metrics.registry.metrics();
    res.writeHead(200, {
      "content-type": metrics.registry.contentType,
      "content-length": Buffer.byteLength(body),
    });
    res.end(body);
  };
}
