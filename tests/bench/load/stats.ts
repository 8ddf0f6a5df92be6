// Summaries of a run: per-segment latency distributions, counts, throughput, errors.
import { percentile } from "../../support/load-client.js";
import type { RequestSample } from "./request.js";

/**
 * The latency segments of the report, in its order. All microseconds; the X-Timing ones are the
 * coordinator's own clock, the others the load generator's.
 */
export const SEGMENTS = [
  "total_e2e",
  "ttft",
  "inter_token",
  "parse",
  "auth",
  "reserve",
  "route",
  "queue_wait",
  "encrypt",
  "dispatch",
  "provider_first_token",
  "coordinator_total",
  "coordinator_overhead",
] as const;
export type Segment = (typeof SEGMENTS)[number];

/** What each segment measures (printed under the table and included in --json). */
export const SEGMENT_DEFINITIONS: Record<Segment, string> = {
  total_e2e: "client: request written to the last response byte (successful requests)",
  ttft: "client: request written to the first SSE event with content (streams)",
  inter_token: "client: gap between consecutive content events; events that arrive in one read count 0",
  parse: "X-Timing parse: reading and validating the body",
  auth: "X-Timing auth: API key lookup and rate limit",
  reserve: "X-Timing reserve: the billing hold (one database round trip)",
  route: "X-Timing route: choosing a provider, excluding queue_wait",
  queue_wait: "X-Timing queue: waiting for a free provider slot",
  encrypt: "X-Timing encrypt: sealing the request to the provider's key",
  dispatch: "X-Timing dispatch: request sent down the provider stream until the provider accepted it",
  provider_first_token: "X-Timing provider_first_token: dispatch until the provider's first token",
  coordinator_total:
    "X-Timing total: the coordinator's time until its first byte (streams) or the whole response (non-streaming)",
  coordinator_overhead:
    "X-Timing total − provider_first_token − queue: the coordinator's own time before the first byte; streams only (a non-streaming total also holds the generation after the first token)",
};

/** Other names accepted in --assert (every segment's own name, plus the X-Timing names). */
export const SEGMENT_ALIASES: Record<string, Segment> = {
  ...Object.fromEntries(SEGMENTS.map((s) => [s, s])),
  queue: "queue_wait",
  e2e: "total_e2e",
  overhead: "coordinator_overhead",
  total: "coordinator_total",
};

export function isSegment(name: string): name is Segment {
  return (SEGMENTS as readonly string[]).includes(name);
}

export const METRICS = ["mean", "p50", "p95", "p99", "max"] as const;
export type Metric = (typeof METRICS)[number];

export interface Summary {
  count: number;
  /** Microseconds; NaN when count is 0 (null in JSON). */
  mean: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/** Count, mean, nearest-rank percentiles and max of a list of microsecond values. */
export function summarize(values: readonly number[]): Summary {
  if (values.length === 0) {
    return { count: 0, mean: Number.NaN, p50: Number.NaN, p95: Number.NaN, p99: Number.NaN, max: Number.NaN };
  }
  const sorted = Float64Array.from(values).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  // percentile() sorts a copy; hand it the sorted array so that copy is already in order.
  const list = Array.from(sorted);
  return {
    count: sorted.length,
    mean: sum / sorted.length,
    p50: percentile(list, 50),
    p95: percentile(list, 95),
    p99: percentile(list, 99),
    max: sorted[sorted.length - 1] as number,
  };
}

export interface ErrorCount {
  /** e.g. "429 rate_limit_exceeded", "stream_error server_error", "socket ECONNRESET", "timeout". */
  key: string;
  count: number;
  /** The first message seen for this key. */
  example: string;
}

export interface UserCount {
  /** Index of the API key (0-based, in rotation order). */
  user: number;
  requests: number;
  errors: number;
}

export interface RunSummary {
  totalRequests: number;
  success: number;
  errors: number;
  /** Measured phase only (warm-up excluded), microseconds. */
  durationUs: number;
  /** Successful requests per second. */
  throughput: number;
  /** Completion tokens of successful requests (from usage). */
  completionTokens: number;
  /** Completion tokens per second. */
  tokenThroughput: number;
  segments: Record<Segment, Summary>;
  errorCounts: ErrorCount[];
  /** Responses by HTTP status ("none" when no response arrived). */
  statusCounts: Record<string, number>;
  /** Successful requests by X-Provider-Id. */
  providers: Record<string, number>;
  users: UserCount[];
  /** Successful requests without a readable X-Timing header. */
  missingTiming: number;
}

/** Summarizes the measured requests of a run that took `durationUs`, over `users` API keys. */
export function summarizeRun(
  samples: readonly RequestSample[],
  durationUs: number,
  users: number,
): RunSummary {
  const values = Object.fromEntries(SEGMENTS.map((s) => [s, [] as number[]])) as Record<Segment, number[]>;
  const errors = new Map<string, ErrorCount>();
  const statusCounts: Record<string, number> = {};
  const providers: Record<string, number> = {};
  const perUser: UserCount[] = Array.from({ length: users }, (_, user) => ({ user, requests: 0, errors: 0 }));
  let success = 0;
  let completionTokens = 0;
  let missingTiming = 0;
  for (const s of samples) {
    const status = s.status === 0 ? "none" : String(s.status);
    statusCounts[status] = (statusCounts[status] ?? 0) + 1;
    const user = perUser[s.user];
    if (user) user.requests++;
    if (s.error !== undefined) {
      if (user) user.errors++;
      const seen = errors.get(s.error.key);
      if (seen) seen.count++;
      else errors.set(s.error.key, { key: s.error.key, count: 1, example: s.error.message });
      continue;
    }
    success++;
    completionTokens += s.completionTokens ?? 0;
    if (s.providerId) providers[s.providerId] = (providers[s.providerId] ?? 0) + 1;
    values.total_e2e.push(s.e2eUs);
    if (s.ttftUs !== undefined) values.ttft.push(s.ttftUs);
    for (const gap of s.gapsUs) values.inter_token.push(gap);
    const t = s.timing;
    if (!t) {
      missingTiming++;
      continue;
    }
    values.parse.push(t.parse);
    values.auth.push(t.auth);
    values.reserve.push(t.reserve);
    values.route.push(t.route);
    values.queue_wait.push(t.queue);
    values.encrypt.push(t.encrypt);
    values.dispatch.push(t.dispatch);
    values.provider_first_token.push(t.provider_first_token);
    values.coordinator_total.push(t.total);
    if (s.stream) values.coordinator_overhead.push(t.total - t.provider_first_token - t.queue);
  }
  const seconds = durationUs / 1_000_000;
  return {
    totalRequests: samples.length,
    success,
    errors: samples.length - success,
    durationUs,
    throughput: seconds > 0 ? success / seconds : 0,
    completionTokens,
    tokenThroughput: seconds > 0 ? completionTokens / seconds : 0,
    segments: Object.fromEntries(SEGMENTS.map((s) => [s, summarize(values[s])])) as Record<Segment, Summary>,
    errorCounts: [...errors.values()].sort((a, b) => b.count - a.count || a.key.localeCompare(b.key)),
    statusCounts,
    providers,
    users: perUser,
    missingTiming,
  };
}
