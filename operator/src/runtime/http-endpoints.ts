import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

export interface Endpoint {
  readonly url: string;
  close(): Promise<void>;
}

/**
 * The probe endpoints kubelet calls: /healthz while the process runs its loop, /readyz once
 * `ready()` holds (a follower is ready: it is a warm standby, and readiness gates nothing it serves).
 */
export function serveHealth(host: string, port: number, ready: () => boolean): Promise<Endpoint> {
  return listen(host, port, (path) => {
    if (path === "/healthz") return { status: 200, body: "ok\n" };
    if (path === "/readyz")
      return ready() ? { status: 200, body: "ok\n" } : { status: 503, body: "not ready\n" };
    return undefined;
  });
}

/** Prometheus's scrape endpoint, /metrics. */
export function serveMetrics(host: string, port: number, registry: Registry): Promise<Endpoint> {
  return listen(host, port, async (path) =>
    path === "/metrics"
      ? { status: 200, body: await registry.metrics(), type: registry.contentType }
      : undefined,
  );
}

type Answer = { status: number; body: string; type?: string } | undefined;

function listen(
  host: string,
  port: number,
  route: (path: string) => Answer | Promise<Answer>,
): Promise<Endpoint> {
  const server = http.createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://x").pathname;
    Promise.resolve(request.method === "GET" ? route(path) : undefined)
      .then((answer) => {
        const { status, body, type } = answer ?? { status: 404, body: "not found\n" };
        response.writeHead(status, { "content-type": type ?? "text/plain; charset=utf-8" }).end(body);
      })
      .catch(() => response.writeHead(500).end());
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const address = server.address() as AddressInfo;
      const shown = address.family === "IPv6" ? `[${address.address}]` : address.address;
      resolve({
        url: `http://${shown}:${address.port}`,
        close: () =>
          new Promise((done) => {
            server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
}
