// The command line of `npm run bench:load`: parsing and checking every flag (a mistake is a
// UsageError: one line, exit 64).
import { parseArgs } from "node:util";
import { type Assertion, AssertionSyntaxError, DEFAULT_ASSERTIONS, parseAssertion } from "./assertions.js";
import { DURATION_UNITS, parseDurationMicros } from "./units.js";

/** A command-line mistake: reported as one line with exit code 64. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

export interface LoadOptions {
  help: boolean;
  /** An existing network's URL (with or without /v1); undefined: start our own. */
  baseUrl: string | undefined;
  /** --api-key values, in order (repeated or comma-separated). */
  apiKeys: string[];
  adminKey: string | undefined;
  /** Accounts to send from (rotated per request). */
  users: number;
  /** Provider daemons of our own network. */
  providers: number;
  model: string;
  concurrency: number;
  /** Requests to measure; undefined with --duration alone. */
  total: number | undefined;
  /** Measure for this long (the first of total and duration ends the run). */
  durationMs: number | undefined;
  stream: boolean;
  /** Words in each prompt (about one token each). */
  promptTokens: number;
  maxTokens: number;
  /** Requests sent first and left out of the figures. */
  warmup: number;
  timeoutMs: number;
  json: boolean;
  defaultAsserts: boolean;
  /** --default-asserts (when given) then every --assert, in order. */
  assertions: Assertion[];
}

export const USAGE = `Usage: npm run bench:load -- [options]

Drives POST /v1/chat/completions with a closed loop of --concurrency clients on keep-alive HTTP/1.1
connections and reports throughput, client latencies (end to end, time to first token, gaps between
tokens) and the coordinator's X-Timing phases; --assert turns the figures into a pass/fail exit code.

Target (default: start a network of its own in a temporary directory, removed afterwards):
  --providers N         provider daemons of that network (default 1, at most 16)
  --base-url URL        use an existing network instead (with or without /v1)
  --api-key KEY         an account's API key for --base-url; repeat it or separate keys with commas
                        to rotate requests over several accounts
  --admin-key KEY       the coordinator's admin key: creates --users funded accounts instead
Workload:
  --model NAME          model to request (default tiny)
  --users N             accounts to rotate over (default 1; the number of --api-key values)
  --concurrency N       requests in flight (default 8)
  --total N             requests to measure (default 100, unless --duration is given)
  --duration D          measure for this long, e.g. 30s or 2m (with --total: the first to be reached)
  --warmup N            requests sent first and left out of every figure (default 0)
  --stream, --no-stream SSE streaming or whole responses (default --stream)
  --prompt-tokens N     prompt size in words, about one token each, different for every request (default 32)
  --max-tokens N        max_tokens of each request (default 16)
  --timeout D           a request that takes longer fails as "timeout" (default 120s)
Output:
  --json                one JSON object (durations in microseconds) instead of the tables
  --assert EXPR         repeatable: SEGMENT.METRIC OP DURATION or FIGURE OP NUMBER, e.g.
                        parse.p95<=2ms  reserve.mean<=10ms  total_e2e.p99<=2s  errors<=0
                        throughput>=50  token_throughput>=100  error_rate<=1%
                        metrics: mean p50 p95 p99 max; units: µs us ms s; OP: <= < >= >
                        (quote it for the shell: --assert 'parse.p95<=2ms')
  --default-asserts     adds parse mean<=0.5ms p95<=2ms, reserve mean<=10ms p95<=50ms,
                        encrypt mean<=1ms p95<=10ms, dispatch mean<=1ms p95<=10ms, errors<=0

Exit status: 0 when every assertion passed, 1 when one failed, 2 when the network could not be
started or reached, 64 on a bad flag, 130 when interrupted.
`;

const MODEL = /^[A-Za-z0-9._:/-]{1,128}$/;
/** A bearer token: visible ASCII, as an HTTP header allows. */
const KEY = /^[\x21-\x7e]+$/;

function integer(raw: string | undefined, flag: string, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || n < min || n > max) {
    throw new UsageError(`${flag} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

/** A duration flag in milliseconds; a bare number is seconds. */
function duration(raw: string | undefined, flag: string, fallbackMs: number | undefined, maxMs: number) {
  if (raw === undefined) return fallbackMs;
  const us = parseDurationMicros(raw, "s");
  if (us === undefined || us < 1_000 || us > maxMs * 1_000) {
    throw new UsageError(
      `${flag} must be a duration from 1ms to ${maxMs / 3_600_000}h such as 30s or 500ms (units ${DURATION_UNITS}), got ${JSON.stringify(raw)}`,
    );
  }
  return us / 1_000;
}

/** Parses the arguments after `npm run bench:load --`. Throws UsageError on any mistake. */
export function parseOptions(argv: readonly string[]): LoadOptions {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    throw new UsageError((message.split("\n")[0] ?? message).replace(/\. To specify a positional.*$/, ""));
  }
  const { values, tokens } = parsed;
  const positional = tokens.find((t) => t.kind === "positional");
  if (positional) throw new UsageError(`unexpected argument ${JSON.stringify(positional.value)}`);
  // The last of --stream / --no-stream wins.
  let stream = true;
  for (const t of tokens)
    if (t.kind === "option" && (t.name === "stream" || t.name === "no-stream")) stream = t.name === "stream";

  const apiKeys = (values["api-key"] ?? []).flatMap((v) => v.split(",")).map((k) => k.trim());
  if (apiKeys.some((k) => k === "")) throw new UsageError("--api-key must not be empty");
  if (apiKeys.some((k) => !KEY.test(k))) {
    throw new UsageError("--api-key must be printable ASCII without spaces (an HTTP header value)");
  }
  const adminKey = values["admin-key"];
  if (adminKey !== undefined && !KEY.test(adminKey)) {
    throw new UsageError("--admin-key must be printable ASCII without spaces and not empty");
  }
  const baseUrl = values["base-url"];
  if (baseUrl !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(baseUrl);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:") || url.search || url.hash) {
      throw new UsageError(`--base-url must be an http:// or https:// URL, got ${JSON.stringify(baseUrl)}`);
    }
    if (apiKeys.length === 0 && adminKey === undefined) {
      throw new UsageError("--base-url needs --api-key KEY (repeatable) or --admin-key KEY");
    }
    if (apiKeys.length > 0 && adminKey !== undefined) {
      throw new UsageError("give --api-key or --admin-key, not both (--admin-key creates the accounts)");
    }
    if (values.providers !== undefined) {
      throw new UsageError(
        "--providers applies only to the network bench:load starts itself (no --base-url)",
      );
    }
  } else if (apiKeys.length > 0 || adminKey !== undefined) {
    throw new UsageError(
      "--api-key and --admin-key need --base-url (without it bench:load starts its own network)",
    );
  }

  const usersGiven = values.users !== undefined;
  let users = integer(values.users, "--users", 1, 1, 10_000);
  if (apiKeys.length > 0) {
    if (usersGiven && users !== apiKeys.length) {
      throw new UsageError(
        `--users ${users} needs --admin-key to create the accounts, or ${users} --api-key values (got ${apiKeys.length})`,
      );
    }
    users = apiKeys.length;
  }

  const model = values.model ?? "tiny";
  if (!MODEL.test(model))
    throw new UsageError(`--model must be a model id like tiny, got ${JSON.stringify(model)}`);

  const durationMs = duration(values.duration, "--duration", undefined, 7 * 24 * 3_600_000);
  const total =
    values.total === undefined && durationMs !== undefined
      ? undefined
      : integer(values.total, "--total", 100, 1, 100_000_000);

  const defaultAsserts = values["default-asserts"] === true;
  const assertions: Assertion[] = [];
  for (const text of [...(defaultAsserts ? DEFAULT_ASSERTIONS : []), ...(values.assert ?? [])]) {
    try {
      assertions.push(parseAssertion(text));
    } catch (e) {
      if (e instanceof AssertionSyntaxError) throw new UsageError(`--assert: ${e.message}`);
      throw e;
    }
  }

  return {
    help: values.help === true,
    baseUrl,
    apiKeys,
    adminKey,
    users,
    providers: integer(values.providers, "--providers", 1, 1, 16),
    model,
    concurrency: integer(values.concurrency, "--concurrency", 8, 1, 100_000),
    total,
    durationMs,
    stream,
    promptTokens: integer(values["prompt-tokens"], "--prompt-tokens", 32, 1, 1_000_000),
    maxTokens: integer(values["max-tokens"], "--max-tokens", 16, 1, 1_000_000),
    warmup: integer(values.warmup, "--warmup", 0, 0, 1_000_000),
    timeoutMs: duration(values.timeout, "--timeout", 120_000, 24 * 3_600_000) ?? 120_000,
    json: values.json === true,
    defaultAsserts,
    assertions,
  };
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: true,
    tokens: true,
    options: {
      help: { type: "boolean", short: "h" },
      "base-url": { type: "string" },
      "api-key": { type: "string", multiple: true },
      "admin-key": { type: "string" },
      users: { type: "string" },
      providers: { type: "string" },
      model: { type: "string" },
      concurrency: { type: "string" },
      total: { type: "string" },
      duration: { type: "string" },
      warmup: { type: "string" },
      stream: { type: "boolean" },
      "no-stream": { type: "boolean" },
      "prompt-tokens": { type: "string" },
      "max-tokens": { type: "string" },
      timeout: { type: "string" },
      json: { type: "boolean" },
      assert: { type: "string", multiple: true },
      "default-asserts": { type: "boolean" },
    },
  });
}
