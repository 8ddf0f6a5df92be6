import http from "node:http";

export interface LoadOptions {
  /** Base URL of the server, e.g. http://127.0.0.1:8080 */
  url: string;
  path: string;
  apiKey: string;
  body: string;
  concurrency: number;
  /** Total requests to send. */
  total: number;
  /** Called with the response's X-Request-ID and the wall-clock time (ms, sub-ms precision) of its first body byte. */
  onFirstByte?: (requestId: string, atMs: number) => void;
}

export interface LoadResult {
  ok: number;
  errors: number;
  statusCounts: Record<string, number>;
  seconds: number;
  requestsPerSecond: number;
  /** Per-request latency to the last byte, milliseconds. */
  latenciesMs: number[];
}

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes on one machine. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * A closed-loop load generator: `concurrency` workers on keep-alive HTTP/1.1 connections, each
 * sending its next request when the previous response ended, until `total` were sent.
 */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency, maxFreeSockets: o.concurrency });
  const target = new URL(o.path, o.url);
  const payload = Buffer.from(o.body);
  const headers = {
    "content-type": "application/json",
    "content-length": String(payload.length),
    authorization: `Bearer ${o.apiKey}`,
  };
  let sent = 0;
  let ok = 0;
  let errors = 0;
  const statusCounts: Record<string, number> = {};
  const latenciesMs: number[] = [];

  const one = () =>
    new Promise<void>((resolve) => {
      const start = performance.now();
      const req = http.request(
        { agent, host: target.hostname, port: target.port, path: target.pathname, method: "POST", headers },
        (res) => {
          const id = String(res.headers["x-request-id"] ?? "");
          let first = true;
          res.on("data", () => {
            if (first) {
              first = false;
              o.onFirstByte?.(id, nowMs());
            }
          });
          res.on("end", () => {
            const key = String(res.statusCode);
            statusCounts[key] = (statusCounts[key] ?? 0) + 1;
            if (res.statusCode === 200) ok++;
            else errors++;
            latenciesMs.push(performance.now() - start);
            resolve();
          });
          res.on("error", () => {
            errors++;
            resolve();
          });
        },
      );
      req.on("error", () => {
        errors++;
        statusCounts.socket_error = (statusCounts.socket_error ?? 0) + 1;
        resolve();
      });
      req.end(payload);
    });

  const worker = async () => {
    while (sent < o.total) {
      sent++;
      await one();
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(o.concurrency, o.total) }, worker));
  const seconds = (performance.now() - t0) / 1000;
  agent.destroy();
  return { ok, errors, statusCounts, seconds, requestsPerSecond: ok / seconds, latenciesMs };
}

/** The middle value (the mean of the two middle ones for an even count); 0 for none. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}
