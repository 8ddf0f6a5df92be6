import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { notFound } from "../errors/index.js";
import type { Logger } from "../log.js";
import { createApp } from "./app.js";
import { newRequestId } from "./request-id.js";
import { sendError } from "./respond.js";
import { asResponse, type Handler } from "./types.js";

export interface MetricsListener {
  /** http://host:port of the listener. */
  url: string;
  close(): Promise<void>;
}

/**
 * A plain HTTP/1.1 listener serving only GET /metrics, for operators who scrape on a port of their
 * own (one a Service exposes inside the cluster but no ingress reaches). Node's own header and
 * request timeouts apply here: the sockets are accepted by this server itself.
 */
export async function listenMetrics(
  metrics: Handler,
  host: string,
  port: number,
  log: Logger,
): Promise<MetricsListener> {
  const app = createApp(
    [{ method: "GET", path: "/metrics", handler: metrics }],
    (req, res) => sendError(res, notFound(req.url ?? "/"), { "X-Request-ID": newRequestId() }),
    log,
  );
  const server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    void app(req, asResponse(res));
  });
  server.maxConnections = 256;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shown = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${shown}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
