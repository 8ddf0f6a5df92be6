import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { isLoopbackHost } from "../config/coordinator-transport.js";
import { formatListenAddress, type ListenAddress } from "./listen-address.js";

/** What the listener serves on /metrics (ProviderMetrics). */
export interface MetricsSource {
  readonly contentType: string;
  expose(): Promise<string>;
}

export interface MetricsServer {
  /** http://host:port it listens on (the port the system chose when 0 was asked for). */
  readonly url: string;
  /** Stops listening and drops open connections (a scrape in progress is cut). */
  close(): Promise<void>;
}

/** The listener could not bind; `code` is the system's (EADDRINUSE, EACCES, EADDRNOTAVAIL…). */
export class MetricsListenError extends Error {
  override readonly name = "MetricsListenError";
  constructor(
    readonly address: ListenAddress,
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

const ROUTES = new Set(["/metrics", "/healthz"]);
const ALLOW = "GET, HEAD";

/**
 * A plain HTTP/1.1 listener for GET /metrics (Prometheus text) and GET /healthz (200 while the
 * daemon runs: a container's liveness probe). Other methods on those paths are 405, other paths 404.
 * It reads nothing of a request but its line, so a client can cost it only a socket, and those are
 * capped: Prometheus keeps one connection open per target.
 */
export async function serveMetrics(address: ListenAddress, source: MetricsSource): Promise<MetricsServer> {
  const server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    const path = new URL(req.url ?? "/", "http://metrics.invalid").pathname;
    if (!ROUTES.has(path)) return plain(res, 404, "not found\n");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", ALLOW);
      return plain(res, 405, "method not allowed\n");
    }
    if (path === "/healthz") return plain(res, 200, "ok\n");
    source.expose().then(
      (text) => {
        res.writeHead(200, { "Content-Type": source.contentType, "Cache-Control": "no-store" }).end(text);
      },
      () => plain(res, 500, "metrics unavailable\n"),
    );
  });
  server.maxConnections = 64;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: address.host, port: address.port }, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === "EADDRINUSE"
        ? "the address is in use (another daemon on this machine?)"
        : code === "EADDRNOTAVAIL"
          ? "no interface of this machine has that address"
          : code === "EACCES"
            ? "permission denied"
            : (error as Error).message;
    throw new MetricsListenError(
      address,
      code,
      `cannot serve metrics on ${formatListenAddress(address)}: ${why}`,
    );
  }
  const bound = server.address() as AddressInfo;
  return {
    url: `http://${formatListenAddress({ host: bound.address, port: bound.port })}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function plain(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8" }).end(body);
}

export interface MetricsListenOptions {
  listen: ListenAddress;
  /**
   * Whether the address was chosen by the operator (flag, environment, config file): then a failure
   * to bind stops the start, since monitoring that silently is not there is worse than a daemon
   * that says why it did not start. The default address is best-effort: a second daemon on the
   * machine (or anything else on the port) must not keep this one from serving inference.
   */
  required: boolean;
}

/**
 * Opens the metrics listener for a daemon: warns when it is reachable from other machines (what
 * this provider serves, and how busy it is, is then visible to them), and when binding fails either
 * throws MetricsListenError (required) or logs a warning and returns undefined.
 */
export async function listenForMetrics(
  source: MetricsSource,
  options: MetricsListenOptions,
  log: Logger,
): Promise<MetricsServer | undefined> {
  const shown = formatListenAddress(options.listen);
  if (!isLoopbackHost(options.listen.host)) {
    log.warn(
      { metrics: shown },
      "metrics listener on a non-loopback address: whoever reaches it sees which models this provider serves and how busy it is",
    );
  }
  try {
    const server = await serveMetrics(options.listen, source);
    log.info({ url: server.url }, "serving metrics");
    return server;
  } catch (error) {
    if (!(error instanceof MetricsListenError) || options.required) throw error;
    log.warn(
      { metrics: shown, code: error.code },
      `${error.message}; serving without metrics (set --metrics-listen to another address, or off)`,
    );
    return undefined;
  }
}
