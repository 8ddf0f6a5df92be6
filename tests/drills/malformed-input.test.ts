// The malformed-input flood drill: one testbed (real PostgreSQL, the coordinator process, one provider
// daemon serving the tiny model) takes a flood of bad input on every surface an outsider can reach:
// fuzzed OpenAI request bodies, oversized and endless uploads, bad credentials, raw HTTP/2 provider
// streams carrying garbage or structurally valid nonsense, and socket-level attacks (connections that
// never finish a request, more connections than an address may hold, a consumer that never reads).
// Every answer must be a 4xx in OpenAI's error shape (or a Connect/gRPC error status on the provider
// stream): never a 5xx, a reset socket, a hang or a crash; slow connections are closed at their
// deadlines and surplus ones at once. Afterwards the same coordinator process still serves, the
// provider is still routable, nothing was billed and the ledger verifies.
//
// Reproduce a failure with the seed it prints: DARKBLOOM_FUZZ_SEED=<seed> npx vitest run
// tests/drills/malformed-input.test.ts. DARKBLOOM_HEAVY_TESTS=1 sends 20,000 bodies instead of 1,200.
import { readFile } from "node:fs/promises";
import http2 from "node:http2";
import net from "node:net";
import { gzipSync } from "node:zlib";
import { fromBinary } from "@bufbuild/protobuf";
import { ConnectResponseSchema } from "@darkbloom/protocol/provider/v1";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import { startTestbed, type Testbed, type TestbedAccount } from "../testbed/index.js";
import {
  type AuthMode,
  CONNECT_PATH,
  encodeRequest,
  envelope,
  fuzzSeed,
  generateHttpCases,
  generateStreamCases,
  type HttpCase,
  Rng,
  type StreamCase,
} from "./fuzz.js";
import { limitHits, SLOW_KINDS, type SlowOutcome, slowConnection, unreadStream } from "./socket-attacks.js";
import { findLongPrompt, greedyChat, settledUsage } from "./support.js";

const HEAVY = process.env.DARKBLOOM_HEAVY_TESTS === "1";
const HTTP_CASES = HEAVY ? 20_000 : 1_200;
const STREAM_SESSIONS = HEAVY ? 1_000 : 200;
const CONCURRENCY = 16;
/** The coordinator's default request body limit. */
const BODY_LIMIT = 4 * 1024 * 1024;
/** The provider service's deadline for a stream's first message (link/provider-service.ts). */
const REGISTER_TIMEOUT_MS = 10_000;
/** An answer slower than this is a hang. */
const ANSWER_TIMEOUT_MS = 20_000;
/** The coordinator's header, body and send deadlines in this drill (serve flags). */
const DEADLINE_MS = 5_000;
/** Its per-address connection cap: room for the provider-stream flood, which comes from one address. */
const PER_ADDRESS = STREAM_SESSIONS + 100;
/** Connections each attacking address opens beyond the cap. */
const SURPLUS = 50;

const SEED = fuzzSeed();
/** In every fuzzed prompt; it must never reach the coordinator's log. */
const MARKER = `DBFUZZ${SEED.toString(16).padStart(8, "0")}MARK`;

let tb: Testbed;
let account: TestbedAccount;
let moneyAccount: TestbedAccount;
let coordinatorPid: number | undefined;
let providerId: string;
let startBalance: bigint;
let startMemory: Memory | undefined;

beforeAll(async () => {
  process.stderr.write(`malformed-input drill: DARKBLOOM_FUZZ_SEED=${SEED}\n`);
  tb = await startTestbed({
    providers: [{ models: ["tiny"] }],
    // A flood from one account must reach the parser, not the per-account token bucket.
    coordinatorArgs: [
      "--rate-limit",
      "0",
      // The same for failed credentials from one address: the flood's bad keys must reach their 401.
      ...["--auth-failure-rate", "0"],
      // Short deadlines and a small response buffer, so that the socket-level attacks end soon.
      ...["--header-timeout", `${DEADLINE_MS}ms`, "--body-timeout", `${DEADLINE_MS}ms`],
      ...["--send-timeout", `${DEADLINE_MS}ms`, "--max-response-buffer", "16KiB"],
      ...["--max-connections-per-address", String(PER_ADDRESS)],
    ],
  });
  account = await tb.createAccount(10_000_000n);
  moneyAccount = await tb.createAccount(1_000_000n);
  startBalance = await tb.balance(account.id);
  coordinatorPid = tb.coordinator.pid;
  const routable = await tb.routable("tiny");
  expect(routable).toHaveLength(1);
  providerId = routable[0]?.providerId ?? "";
  startMemory = await memory(coordinatorPid);
}, 180_000);

afterAll(async () => {
  await tb?.stop();
}, 60_000);

/** Prints the seed (and whatever the test adds) when a test fails. */
function reportOnFailure(details: () => string): void {
  onTestFailed(() => {
    console.error(`malformed-input drill failed; replay with DARKBLOOM_FUZZ_SEED=${SEED}\n${details()}`);
  });
}

describe("malformed-input flood", () => {
  it(
    `answers ${HTTP_CASES} fuzzed requests with 4xx errors in OpenAI's shape, none billed or dispatched`,
    async () => {
      const cases = generateHttpCases(new Rng(SEED), HTTP_CASES, MARKER);
      const table = new Tally();
      const problems: string[] = [];
      reportOnFailure(() => `${table.render()}\n${problems.slice(0, 30).join("\n")}`);

      const started = performance.now();
      let sent = 0;
      await inPool(cases, CONCURRENCY, async (c) => {
        const outcome = await send(c);
        sent++;
        table.add(outcome.key);
        if (outcome.problem) problems.push(`#${c.id} ${c.method} ${c.path} [${c.label}]: ${outcome.problem}`);
      });
      const seconds = (performance.now() - started) / 1000;
      process.stderr.write(
        `${sent} fuzzed requests in ${seconds.toFixed(1)} s (seed ${SEED})\n${table.render()}\n`,
      );

      expect(problems, `seed ${SEED}\n${table.render()}\n${problems.slice(0, 30).join("\n")}`).toEqual([]);
      expect(sent).toBe(HTTP_CASES);
      expect(tb.coordinator.pid).toBe(coordinatorPid);
      expect(await tb.balance(account.id), "rejected requests must not be billed").toBe(startBalance);
    },
    HEAVY ? 900_000 : 120_000,
  );

  it("answers garbage binary messages to the typed Connect APIs with 4xx, never 5xx", async () => {
    // Every unary method of the consumer and admin services, with and without credentials: random
    // bytes, truncated varints, invalid wire types and gzip-compressed garbage, each a Connect unary
    // call in the binary format. connect-es by itself answers these 500 `internal`.
    const rng = new Rng(SEED ^ 0x5eed);
    const methods = [
      "/darkbloom.inference.v1.InferenceService/CreateChatCompletion",
      "/darkbloom.inference.v1.InferenceService/CreateCompletion",
      "/darkbloom.inference.v1.InferenceService/ListModels",
      "/darkbloom.admin.v1.AdminService/VerifyLedger",
      "/darkbloom.admin.v1.AdminService/ListAccounts",
      "/darkbloom.admin.v1.AdminService/ListProviders",
    ];
    const table = new Tally();
    reportOnFailure(() => table.render());
    const cases = Array.from({ length: HEAVY ? 2_000 : 240 }, (_, i) => {
      const kind = rng.int(4);
      const raw =
        kind === 0
          ? rng.bytes(rng.range(1, 512))
          : kind === 1
            ? Buffer.from([0x0a, 0x80 | rng.int(128)]) // a length-delimited field whose length is cut off
            : kind === 2
              ? Buffer.from([(rng.range(1, 15) << 3) | rng.pick([3, 4, 6, 7])]) // groups and invalid wire types
              : Buffer.concat([Buffer.from([0x12, 0x7f]), rng.bytes(rng.range(0, 20))]); // length beyond the data
      const gzip = rng.chance(0.25);
      return {
        path: methods[i % methods.length] as string,
        body: gzip ? gzipSync(raw) : raw,
        headers: {
          "content-type": "application/proto",
          ...(gzip ? { "content-encoding": "gzip" } : {}),
          ...(rng.chance(0.5)
            ? { authorization: `Bearer ${rng.chance(0.5) ? account.apiKey : tb.adminKey}` }
            : {}),
        },
      };
    });
    await inPool(cases, CONCURRENCY, async (c) => {
      const res = await fetch(`${tb.coordinator.url}${c.path}`, {
        method: "POST",
        headers: c.headers,
        body: c.body,
        signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
      });
      const text = await res.text();
      // Random bytes can decode as a valid message (unknown fields are skipped): then the answer is
      // a binary protobuf response, not a JSON error.
      const json = res.headers.get("content-type")?.startsWith("application/json") && text !== "";
      const code = json ? ((JSON.parse(text) as { code?: string }).code ?? "") : "";
      table.add(`${res.status} ${code}`);
    });
    const keys = table.render();
    expect(keys).not.toMatch(/^\s*5\d\d /m);
    expect(keys).toMatch(/^\s*400 invalid_argument/m);
    expect(tb.coordinator.pid).toBe(coordinatorPid);
    expect(await tb.balance(account.id)).toBe(startBalance);
  });

  it("refuses a body over the limit with 413 in OpenAI's shape and cuts an endless upload", async () => {
    reportOnFailure(() => "");

    // At the limit the body is parsed (and refused for what it says); one byte more is refused unread.
    const atLimit = padded(BODY_LIMIT);
    const exact = await tb.chat(account.apiKey, atLimit);
    expect(exact.status).toBe(400);
    await expectOpenAiError(exact);
    const over = await tb.chat(account.apiKey, padded(BODY_LIMIT + 1));
    expect(over.status).toBe(413);
    expect((await expectOpenAiError(over)).code).toBe("request_too_large");

    // HTTP/1.1, chunked, without end: the 413 comes once the limit is passed, then the connection closes.
    const before = await memory(coordinatorPid);
    const h1 = await endlessUploadHttp1(account.apiKey);
    expect(h1.status, JSON.stringify(h1)).toBe(413);
    expect(JSON.parse(h1.body).error?.code, h1.body).toBe("request_too_large");
    expect(h1.sentBeforeAnswer, "the 413 must come once the limit is passed").toBeLessThan(BODY_LIMIT * 4);
    expect(
      h1.closedAfterAnswerMs,
      `the upload must be cut, not drained (${JSON.stringify(h1)})`,
    ).toBeLessThan(2_000);

    // HTTP/2 (h2c): the same, with the stream reset once the 413 is out.
    const h2 = await endlessUploadHttp2(account.apiKey);
    expect(h2.status, JSON.stringify(h2)).toBe(413);
    expect(JSON.parse(h2.body).error?.code, h2.body).toBe("request_too_large");
    expect(
      h2.closedAfterAnswerMs,
      `the upload must be cut, not drained (${JSON.stringify(h2)})`,
    ).toBeLessThan(2_000);

    // A declared Content-Length over the limit: refused before any of it is read, connection closed.
    const declared = await declaredOversize(account.apiKey);
    expect(declared.head, declared.head).toMatch(/^HTTP\/1\.1 413 /);
    expect(declared.closedMs, "the connection must not wait for 100 MB that will not be read").toBeLessThan(
      2_000,
    );

    // The typed Connect API: a gzip body that inflates 256 MiB is cut at the same limit, unauthenticated.
    const bomb = gzipSync(Buffer.alloc(256 * 1024 * 1024), { level: 1 });
    const inflated = await fetch(`${tb.coordinator.url}/darkbloom.inference.v1.InferenceService/ListModels`, {
      method: "POST",
      headers: { "content-type": "application/proto", "content-encoding": "gzip" },
      body: bomb,
      signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
    });
    const inflatedBody = await inflated.text();
    expect(inflated.status, inflatedBody).toBe(429);
    expect(JSON.parse(inflatedBody).code, inflatedBody).toBe("resource_exhausted");

    const after = await memory(coordinatorPid);
    if (before && after) {
      expect(after.rss - before.rss, "the refused uploads must not be buffered").toBeLessThan(
        64 * 1024 * 1024,
      );
    }
    expect(tb.coordinator.pid).toBe(coordinatorPid);
    expect(await tb.balance(account.id)).toBe(startBalance);
  });

  it(
    `ends ${STREAM_SESSIONS}+ malformed provider streams with an error status and never routes to them`,
    async () => {
      const rng = new Rng(SEED ^ 0x5eed);
      const table = new Tally();
      const problems: string[] = [];
      reportOnFailure(() => `${table.render()}\n${problems.slice(0, 30).join("\n")}`);
      const record = (c: StreamCase, where: string, o: StreamOutcome) => {
        table.add(`${c.label.replace(/=.*$/, "")} → ${o.code}`);
        const problem = judgeStream(c, o);
        if (problem) problems.push(`${where} [${c.label}] ${c.contentType}: ${problem}`);
      };

      // Silent sessions: a partial envelope and then nothing. The register deadline must end them.
      const silent = Array.from({ length: 3 }, (_, i): StreamCase => {
        const whole = envelope(
          encodeRequest({ message: { case: "register", value: { protocolVersion: 1 } } }),
        );
        return {
          label: `silent-after-${i === 0 ? "header-part" : "partial-envelope"}`,
          contentType: i === 2 ? "application/grpc" : "application/connect+proto",
          frames: [whole.subarray(0, i === 0 ? 3 : whole.length - 1)],
          finish: "open",
          expect: { kind: "error", codes: ["deadline_exceeded"], withinMs: REGISTER_TIMEOUT_MS + 4_000 },
        };
      });
      const silentRuns = silent.map((c) =>
        withSession((s) => runStream(s, c)).then((o) => record(c, "silent", o)),
      );

      // Content types the Connect handler does not serve, and Connect's JSON framing with bad JSON.
      const fixed: StreamCase[] = [
        {
          label: "content-type=json",
          contentType: "application/json",
          frames: [new Uint8Array([1, 2])],
          finish: "end",
          expect: { kind: "error", codes: ["http_415"] },
        },
        {
          label: "content-type=text",
          contentType: "text/plain",
          frames: [],
          finish: "end",
          expect: { kind: "error", codes: ["http_415"] },
        },
        {
          label: "connect+json-garbage",
          contentType: "application/connect+json",
          frames: [envelope(new TextEncoder().encode(`{"register":{"protocolVersion":"${MARKER}"`))],
          finish: "end",
          expect: { kind: "error", codes: ["invalid_argument"] },
        },
      ];
      for (const c of fixed) record(c, "fixed", await withSession((s) => runStream(s, c)));

      // The flood: one session per case, all at once; then one session carrying many streams.
      const cases = generateStreamCases(rng, STREAM_SESSIONS);
      await Promise.all(
        cases.map((c, i) => withSession((s) => runStream(s, c)).then((o) => record(c, `session ${i}`, o))),
      );
      const multiplexed = generateStreamCases(rng, 50).filter((c) => c.expect.kind !== "registered");
      await withSession((s) =>
        Promise.all(multiplexed.map((c, i) => runStream(s, c).then((o) => record(c, `stream ${i}`, o)))),
      );
      await Promise.all(silentRuns);
      process.stderr.write(`provider streams (seed ${SEED})\n${table.render()}\n`);

      // Every nonsense session is gone; the real provider is still the one routable provider.
      await waitFor(async () => (await tb.admin.listProviders({})).providers.length === 1, 10_000);
      const routable = await tb.routable("tiny");
      expect(routable.map((p) => p.providerId)).toEqual([providerId]);
      expect(problems, `seed ${SEED}\n${table.render()}\n${problems.slice(0, 30).join("\n")}`).toEqual([]);
      expect(tb.coordinator.pid).toBe(coordinatorPid);
    },
    HEAVY ? 600_000 : 120_000,
  );

  it("closes connections that never finish a request at their deadline, and surplus ones at once, while /healthz answers", async () => {
    const before = limitHits(await tb.metrics());
    // Two attacking addresses (Linux routes all of 127/8 to the loopback), each opening its cap and
    // SURPLUS more connections at once, every one a slowloris of some kind.
    const attackers = ["127.0.0.2", "127.0.0.3"];
    const outcomes: Promise<SlowOutcome>[] = [];
    for (const from of attackers) {
      for (let i = 0; i < PER_ADDRESS + SURPLUS; i++) {
        const kind = SLOW_KINDS[i % SLOW_KINDS.length] as (typeof SLOW_KINDS)[number];
        outcomes.push(slowConnection(tb.coordinator.url, from, kind, account.apiKey, 6 * DEADLINE_MS));
      }
    }
    // Meanwhile everyone else is served.
    for (let i = 0; i < 5; i++) {
      const health = await fetch(`${tb.coordinator.url}/healthz`, {
        signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
      });
      expect(health.status).toBe(200);
      await new Promise((r) => setTimeout(r, DEADLINE_MS / 5));
    }
    const results = await Promise.all(outcomes);
    // Refused: closed at once, without a byte. (Timers fire to the millisecond, so one at the deadline
    // can come a fraction of a millisecond early: half the deadline is the line.)
    const isRefused = (r: SlowOutcome) => r.silent && r.lifetimeMs < DEADLINE_MS / 2;
    const table = new Tally();
    for (const r of results) {
      table.add(`${r.kind} → ${isRefused(r) ? "refused" : r.silent ? "closed silently" : r.answer}`);
    }
    reportOnFailure(() => table.render());
    process.stderr.write(`slow connections\n${table.render()}\n`);

    // Surplus connections were closed at once without a byte; every admitted one at its deadline.
    const refused = results.filter(isRefused);
    for (const from of attackers) expect(refused.filter((r) => r.from === from)).toHaveLength(SURPLUS);
    const admitted = results.filter((r) => !refused.includes(r));
    // Lifetimes are measured by this process from its 'connect' event, which a loaded event loop (600
    // connections opened at once) can see well after the server's accept started the deadline: the
    // lower bound is the refusal line, not the deadline itself.
    const outliers = admitted.filter(
      (r) => !(r.lifetimeMs >= DEADLINE_MS / 2 && r.lifetimeMs < 5 * DEADLINE_MS),
    );
    expect(outliers.map((r) => `${r.kind} from ${r.from}: ${Math.round(r.lifetimeMs)} ms`)).toEqual([]);
    const answers = (kind: string) => new Set(admitted.filter((r) => r.kind === kind).map((r) => r.answer));
    expect(answers("one-byte")).toEqual(new Set(["HTTP/1.1 408 Request Timeout"]));
    expect(answers("partial-preface")).toEqual(new Set([""]));
    expect(answers("dribble")).toEqual(new Set(["HTTP/1.1 408 Request Timeout"]));
    expect(answers("no-body-keyed")).toEqual(new Set(["HTTP/1.1 408 Request Timeout"]));
    expect(answers("no-body-anonymous")).toEqual(new Set(["HTTP/1.1 401 Unauthorized"]));
    expect(answers("h2-no-end-stream")).toEqual(new Set([":status 408"]));

    const after = limitHits(await tb.metrics());
    const delta = (limit: string) => (after[limit] ?? 0) - (before[limit] ?? 0);
    expect(delta("connections_per_address")).toBe(SURPLUS * attackers.length);
    expect(delta("header_timeout")).toBeGreaterThan(0);
    expect(delta("body_timeout")).toBeGreaterThan(0);
    // The freed slots take new connections.
    for (const from of attackers) {
      const again = await slowConnection(
        tb.coordinator.url,
        from,
        "one-byte",
        account.apiKey,
        6 * DEADLINE_MS,
      );
      expect(again.answer).toBe("HTTP/1.1 408 Request Timeout");
    }
    expect(tb.coordinator.pid).toBe(coordinatorPid);
    expect(await tb.balance(account.id), "no slow request was billed").toBe(startBalance);
  }, 120_000);

  it("resets a stream whose consumer reads nothing once the send timeout passes, and settles it", async () => {
    reportOnFailure(() => "");
    // Its own account: the stream is billed for what it was sent (the flood's account must stay whole).
    const reader = await tb.createAccount(10_000_000n);
    const { prompt } = await findLongPrompt(tb, reader.apiKey, 600);
    const before = limitHits(await tb.metrics());
    const outcome = await unreadStream(
      tb.coordinator.url,
      reader.apiKey,
      greedyChat(prompt, { stream: true }),
      120_000,
    );
    expect(outcome.status).toBe(200);
    expect(outcome.rstCode, "the coordinator resets the stream its consumer does not read").toBe(
      http2.constants.NGHTTP2_CANCEL,
    );
    const after = limitHits(await tb.metrics());
    expect((after.send_timeout ?? 0) - (before.send_timeout ?? 0)).toBe(1);
    await tb.settled();
    expect(tb.coordinator.pid).toBe(coordinatorPid);
  }, 180_000);

  it("still serves afterwards: same process, provider routable, a completion billed, ledger verified, log clean", async () => {
    expect(tb.coordinator.running).toBe(true);
    expect(tb.coordinator.pid).toBe(coordinatorPid);
    expect((await tb.routable("tiny")).map((p) => p.providerId)).toEqual([providerId]);
    expect(await tb.balance(account.id), "nothing of the flood was billed").toBe(startBalance);

    const ok = await tb.chat(account.apiKey, {
      model: "tiny",
      messages: [{ role: "user", content: "Say hello" }],
      max_tokens: 4,
    });
    expect(ok.status, await ok.clone().text()).toBe(200);
    const body = (await ok.json()) as { choices: unknown[]; usage: { completion_tokens: number } };
    expect(body.choices).toHaveLength(1);
    expect(body.usage.completion_tokens).toBeGreaterThan(0);
    // The balance drops at the reservation already: wait for the settlement itself.
    const record = await settledUsage(tb, account.id, ok.headers.get("x-request-id") ?? "");
    expect(record.outcome).toBe("completed");
    expect(await tb.balance(account.id)).toBe(startBalance - record.chargedMicroUsd);

    const ledger = await tb.verifyLedger();
    expect(ledger.discrepancies).toEqual([]);
    expect(ledger.ok).toBe(true);
    expect(ledger.openReservations).toBe(0n);

    const end = await memory(coordinatorPid);
    if (startMemory && end) {
      expect(end.hwm - startMemory.hwm, "peak memory growth over the whole drill").toBeLessThan(
        512 * 1024 * 1024,
      );
    }

    const log = await readFile(tb.coordinator.logFile, "utf8");
    const bad = log
      .split("\n")
      .filter((line) => /uncaught|unhandled|fatal/i.test(line) || /"level":(50|60)\b/.test(line));
    expect(bad, "the coordinator logged errors during the flood").toEqual([]);
    expect(log.includes(MARKER), "the coordinator logged a fuzzed prompt").toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// HTTP flood

interface HttpOutcome {
  /** The status-code table's row. */
  key: string;
  problem?: string;
}

function authorization(mode: AuthMode, id: number): string | undefined {
  switch (mode) {
    case "account":
      return `Bearer ${account.apiKey}`;
    case "money-account":
      return `Bearer ${moneyAccount.apiKey}`;
    case "none":
      return undefined;
    case "bare-bearer":
      return "Bearer";
    case "basic":
      return "Basic ZHJpbGw6ZHJpbGw=";
    case "unknown-key":
      return `Bearer sk-drill-${SEED}-${id}`;
    case "long-key":
      return `Bearer ${"k".repeat(300)}`;
  }
}

async function send(c: HttpCase): Promise<HttpOutcome> {
  const headers: Record<string, string> = {};
  const auth = authorization(c.auth, c.id);
  if (auth !== undefined) headers.authorization = auth;
  if (c.contentType !== undefined) headers["content-type"] = c.contentType;
  let res: Response;
  try {
    res = await fetch(`${tb.coordinator.url}${c.path}`, {
      method: c.method,
      headers,
      body: c.body,
      signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
    });
  } catch (e) {
    const cause =
      e instanceof Error ? ((e.cause as { code?: string } | undefined)?.code ?? e.name) : String(e);
    return { key: `network ${cause}`, problem: `no answer: ${cause} (${String(e)})` };
  }
  let text: string;
  try {
    text = await res.text();
  } catch (e) {
    return { key: `${res.status} body-error`, problem: `the body did not arrive whole: ${String(e)}` };
  }
  const contentType = res.headers.get("content-type") ?? "";
  if (res.status === 200 && c.stream && contentType.startsWith("text/event-stream")) {
    return { key: "200 sse", problem: sseErrorProblem(text) };
  }
  const key = (code: string) => `${res.status} ${code}`;
  const error = openAiError(text, contentType);
  if (typeof error === "string") {
    return { key: key("not-openai-shape"), problem: `${res.status}: ${error}: ${text.slice(0, 200)}` };
  }
  const problems: string[] = [];
  if (res.status < 400 || res.status >= 500) problems.push(`status ${res.status}, expected a 4xx`);
  if (c.expect.status !== undefined && res.status !== c.expect.status) {
    if (!(c.expect.allow429 && res.status === 429))
      problems.push(`status ${res.status}, expected ${c.expect.status}`);
  }
  if (c.expect.code !== undefined && error.code !== c.expect.code) {
    problems.push(`code ${error.code}, expected ${c.expect.code}`);
  }
  if (res.status === 429 && !c.expect.allow429)
    problems.push("rate limited (the drill disables the limiter)");
  if (res.status === 402) problems.push("402: the request reached billing");
  if (!res.headers.get("x-request-id")) problems.push("no X-Request-ID");
  const provider = res.headers.get("x-provider-id");
  if (provider) problems.push(`dispatched to provider ${provider} before being refused (${error.message})`);
  return {
    key: key(error.code),
    ...(problems.length ? { problem: `${problems.join("; ")}: ${text.slice(0, 200)}` } : {}),
  };
}

interface OpenAiError {
  message: string;
  type: string;
  code: string;
  param: string | null;
}

/** The error object of an OpenAI-shaped body, or what is wrong with the body. */
function openAiError(text: string, contentType: string): OpenAiError | string {
  if (!contentType.startsWith("application/json")) return `content-type ${JSON.stringify(contentType)}`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return "not JSON";
  }
  const error = (parsed as { error?: unknown } | null)?.error;
  if (typeof error !== "object" || error === null) return "no error object";
  const e = error as Record<string, unknown>;
  if (typeof e.message !== "string" || e.message === "") return "error.message is not a non-empty string";
  if (typeof e.type !== "string" || e.type === "") return "error.type is not a non-empty string";
  if (typeof e.code !== "string" || e.code === "") return "error.code is not a non-empty string";
  if (!("param" in e) || (e.param !== null && typeof e.param !== "string"))
    return "error.param is not a string or null";
  return { message: e.message, type: e.type, code: e.code, param: e.param as string | null };
}

/** A stream that failed after it began must carry one error event, no content, and one [DONE]. */
function sseErrorProblem(text: string): string | undefined {
  const events = text
    .split("\n\n")
    .map((e) => e.trim())
    .filter((e) => e.startsWith("data:"))
    .map((e) => e.slice(5).trim());
  const done = events.filter((e) => e === "[DONE]").length;
  const errors = events.filter(
    (e) => e !== "[DONE]" && typeof openAiError(e, "application/json") !== "string",
  );
  if (done !== 1 || errors.length !== 1 || events.at(-1) !== "[DONE]") {
    return `200 stream without a clean error event: ${text.slice(0, 300)}`;
  }
  return undefined;
}

async function expectOpenAiError(res: Response): Promise<OpenAiError> {
  const error = openAiError(await res.text(), res.headers.get("content-type") ?? "");
  if (typeof error === "string") throw new Error(`not an OpenAI error (${res.status}): ${error}`);
  return error;
}

/** A chat body of exactly `size` bytes that the coordinator must refuse (model is a number). */
function padded(size: number): string {
  const head = '{"model":5,"messages":[{"role":"user","content":"hi"}],"pad":"';
  const tail = '"}';
  return head + "x".repeat(size - head.length - tail.length) + tail;
}

interface UploadResult {
  status: number;
  body: string;
  sentBeforeAnswer: number;
  sentTotal: number;
  /** How long after the answer the server stopped taking the upload (Infinity: it never did). */
  closedAfterAnswerMs: number;
}

const CHUNK = Buffer.alloc(64 * 1024, 0x20);
/** How long the endless uploads keep writing after the answer before giving up. */
const KEEP_WRITING_MS = 3_000;

/**
 * An endless chunked HTTP/1.1 upload on a raw socket (as curl or a proxy would send it), 64 KiB at a
 * time as fast as the socket takes them; it keeps sending until the server closes the connection, or
 * gives up KEEP_WRITING_MS after the answer.
 */
function endlessUploadHttp1(apiKey: string): Promise<UploadResult> {
  const { hostname, port } = new URL(tb.coordinator.url);
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), hostname);
    let sent = 0;
    let sentBeforeAnswer = -1;
    let answeredAt = 0;
    let text = "";
    let finished = false;
    const finish = (closedAfterAnswerMs: number) => {
      if (finished) return;
      finished = true;
      clearInterval(timer);
      socket.destroy();
      const [head = "", body = ""] = text.split("\r\n\r\n");
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
      resolve({ status, body, sentBeforeAnswer, sentTotal: sent, closedAfterAnswerMs });
    };
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      text += d;
      if (!answeredAt) {
        answeredAt = performance.now();
        sentBeforeAnswer = sent;
      }
    });
    socket.on("error", () => undefined);
    socket.on("close", () => finish(answeredAt ? performance.now() - answeredAt : Number.POSITIVE_INFINITY));
    socket.write(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: drill\r\nContent-Type: application/json\r\n" +
        `Authorization: Bearer ${apiKey}\r\nTransfer-Encoding: chunked\r\n\r\n`,
    );
    const timer = setInterval(() => {
      if (answeredAt && performance.now() - answeredAt > KEEP_WRITING_MS)
        return finish(Number.POSITIVE_INFINITY);
      if (!answeredAt && sent > BODY_LIMIT * 8) return finish(Number.POSITIVE_INFINITY);
      if (socket.destroyed || socket.writableLength > 4 * CHUNK.length) return;
      socket.write(`${CHUNK.length.toString(16)}\r\n`);
      socket.write(CHUNK);
      socket.write("\r\n");
      sent += CHUNK.length;
    }, 1);
  });
}

/** The same over h2c: one stream on its own session, until the server resets it. */
function endlessUploadHttp2(apiKey: string): Promise<UploadResult> {
  return new Promise((resolve) => {
    const session = http2.connect(tb.coordinator.url);
    session.on("error", () => undefined);
    const stream = session.request({
      ":method": "POST",
      ":path": "/v1/chat/completions",
      authorization: `Bearer ${apiKey}`,
      "content-type": "application/json",
    });
    let sent = 0;
    let sentBeforeAnswer = -1;
    let answeredAt = 0;
    let status = 0;
    let body = "";
    let finished = false;
    const finish = (closedAfterAnswerMs: number) => {
      if (finished) return;
      finished = true;
      clearInterval(timer);
      session.destroy();
      resolve({ status, body, sentBeforeAnswer, sentTotal: sent, closedAfterAnswerMs });
    };
    stream.on("response", (headers) => {
      status = Number(headers[":status"]);
      sentBeforeAnswer = sent;
      answeredAt = performance.now();
    });
    stream.setEncoding("utf8");
    stream.on("data", (d: string) => {
      body += d;
    });
    stream.on("error", () => undefined);
    const timer = setInterval(() => {
      // A reset (or a closed session) ends the client's side of the stream: the upload is cut.
      if (stream.closed || stream.destroyed) {
        return finish(answeredAt ? performance.now() - answeredAt : Number.POSITIVE_INFINITY);
      }
      if (answeredAt && performance.now() - answeredAt > KEEP_WRITING_MS)
        return finish(Number.POSITIVE_INFINITY);
      if (!answeredAt && sent > BODY_LIMIT * 8) return finish(Number.POSITIVE_INFINITY);
      if (stream.writable && stream.writableLength < 4 * CHUNK.length) {
        stream.write(CHUNK);
        sent += CHUNK.length;
      }
    }, 1);
  });
}

/** Content-Length: 100 MB and 1 KiB of it: the head of the answer, and how long the socket stayed open. */
function declaredOversize(apiKey: string): Promise<{ head: string; closedMs: number }> {
  const { hostname, port } = new URL(tb.coordinator.url);
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), hostname);
    let text = "";
    let answeredAt = 0;
    const done = (closedMs: number) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ head: text.split("\r\n")[0] ?? "", closedMs });
    };
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      text += d;
      answeredAt ||= performance.now();
    });
    socket.on("error", () => undefined);
    socket.on("close", () => done(answeredAt ? performance.now() - answeredAt : Number.POSITIVE_INFINITY));
    const timer = setTimeout(() => done(Number.POSITIVE_INFINITY), KEEP_WRITING_MS + 2_000);
    socket.write(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: drill\r\nContent-Type: application/json\r\n" +
        `Authorization: Bearer ${apiKey}\r\nContent-Length: 100000000\r\n\r\n${"{".repeat(1024)}`,
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Provider streams

interface StreamOutcome {
  /** ok, a Connect code name (invalid_argument, …), http_<status>, hang, reset or ack. */
  code: string;
  message: string;
  ms: number;
  /** Problems seen along the way (a registered nonsense provider that became routable, …). */
  notes: string[];
}

const GRPC_CODES = [
  "ok",
  "canceled",
  "unknown",
  "invalid_argument",
  "deadline_exceeded",
  "not_found",
  "already_exists",
  "permission_denied",
  "resource_exhausted",
  "failed_precondition",
  "aborted",
  "out_of_range",
  "unimplemented",
  "internal",
  "unavailable",
  "data_loss",
  "unauthenticated",
];

async function withSession<T>(run: (s: http2.ClientHttp2Session) => Promise<T>): Promise<T> {
  const session = http2.connect(tb.coordinator.url);
  session.on("error", () => undefined);
  try {
    return await run(session);
  } finally {
    session.destroy();
  }
}

/** What the drill requires of a stream's outcome; undefined when it is right. */
function judgeStream(c: StreamCase, o: StreamOutcome): string | undefined {
  const notes = o.notes.length ? ` (${o.notes.join("; ")})` : "";
  if (c.expect.kind === "reset") return o.notes.length ? notes : undefined;
  if (c.expect.kind === "registered") {
    return o.code === "ack" && o.notes.length === 0
      ? undefined
      : `expected a RegisterAck, got ${o.code} ${o.message}${notes}`;
  }
  const { codes, withinMs } = c.expect;
  if (!codes.includes(o.code))
    return `ended with ${o.code} "${o.message}" after ${Math.round(o.ms)} ms, expected ${codes.join(" or ")}${notes}`;
  // Internal is what connect-es (like grpc-go and grpc-java) answers a message that does not decode
  // or claims a compression that was not negotiated; any other internal error is a coordinator bug.
  if (o.code === "internal" && !/^parse binary|^protocol error|^received compressed envelope/.test(o.message))
    return `internal error "${o.message}"${notes}`;
  if (withinMs !== undefined && o.ms > withinMs)
    return `took ${Math.round(o.ms)} ms, expected under ${withinMs} ms${notes}`;
  return o.notes.length ? notes : undefined;
}

/** Opens the stream, writes the case and reads until the server ends the call (or time runs out). */
function runStream(session: http2.ClientHttp2Session, c: StreamCase): Promise<StreamOutcome> {
  const started = performance.now();
  const grpc = c.contentType.startsWith("application/grpc");
  const stream = session.request({
    ":method": "POST",
    ":path": CONNECT_PATH,
    "content-type": c.contentType,
    ...(grpc ? { te: "trailers" } : {}),
  });
  const notes: string[] = [];
  let buffered: Buffer = Buffer.alloc(0);
  let httpStatus = 0;
  return new Promise<StreamOutcome>((resolve) => {
    let settled = false;
    const settle = (code: string, message = "") => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const ms = performance.now() - started;
      // Not from inside the event: Node's HTTP/2 binding corrupts memory when a stream is reset (or its
      // session destroyed) reentrantly from a callback of the frame being received.
      setImmediate(() => {
        if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
        resolve({ code, message, ms, notes });
      });
    };
    const limit =
      c.expect.kind === "error" ? (c.expect.withinMs ?? 0) + ANSWER_TIMEOUT_MS : ANSWER_TIMEOUT_MS;
    const timer = setTimeout(() => settle("hang", `no end after ${limit} ms`), limit);

    stream.on("response", (headers) => {
      httpStatus = Number(headers[":status"]);
      if (httpStatus !== 200) settle(`http_${httpStatus}`);
      const status = headers["grpc-status"];
      if (grpc && status !== undefined)
        settle(GRPC_CODES[Number(status)] ?? `grpc_${status}`, String(headers["grpc-message"] ?? ""));
    });
    stream.on("trailers", (trailers) => {
      const status = trailers["grpc-status"];
      settle(
        status === undefined ? "no-grpc-status" : (GRPC_CODES[Number(status)] ?? `grpc_${status}`),
        decodeURIComponent(String(trailers["grpc-message"] ?? "")),
      );
    });
    stream.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 5) {
        const flags = buffered.readUInt8(0);
        const length = buffered.readUInt32BE(1);
        if (buffered.length < 5 + length) break;
        const payload = buffered.subarray(5, 5 + length);
        buffered = buffered.subarray(5 + length);
        if (!grpc && flags & 0x02) {
          const end = JSON.parse(payload.toString("utf8")) as { error?: { code?: string; message?: string } };
          settle(end.error?.code ?? "ok", end.error?.message ?? "");
          return;
        }
        onMessage(payload);
      }
    });
    stream.on("end", () =>
      settle(
        c.expect.kind === "reset" ? "reset" : httpStatus === 200 ? "no-end-status" : `http_${httpStatus}`,
      ),
    );
    stream.on("error", (e) => settle("stream-error", e.message));
    stream.on("close", () =>
      settle(c.expect.kind === "reset" ? "reset" : "closed-without-status", `rst ${stream.rstCode}`),
    );

    const onMessage = (payload: Uint8Array) => {
      let kind = "unparseable";
      let ackId = "";
      try {
        const m = fromBinary(ConnectResponseSchema, payload).message;
        kind = m.case ?? "empty";
        if (m.case === "registerAck") ackId = m.value.providerId;
      } catch {
        // reported below
      }
      if (c.expect.kind === "registered") {
        if (kind === "registerAck") void afterAck(ackId);
        return;
      }
      // A session that registered hears its RegisterAck and trust judgement; anything else is wrong.
      if (!(c.registers && (kind === "registerAck" || kind === "runtimeStatus"))) {
        notes.push(`unexpected ${kind} message`);
      }
    };

    const afterAck = async (id: string) => {
      for (const frame of c.after ?? []) stream.write(frame);
      await new Promise((r) => setTimeout(r, 300));
      const { providers } = await tb.admin.listProviders({});
      const self = providers.find((p) => p.providerId === id);
      if (self?.routable) notes.push(`nonsense provider ${id} is routable`);
      if (
        providers.filter((p) => p.routable).some((p) => p.providerId !== providerId && p.providerId !== id)
      ) {
        notes.push("another nonsense provider is routable");
      }
      settle("ack");
    };

    for (const frame of c.frames) stream.write(frame);
    if (c.finish === "end") stream.end();
    else if (c.finish === "rst") {
      setImmediate(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
      });
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Counts per row, printed as a table. */
class Tally {
  private readonly rows = new Map<string, number>();

  add(key: string): void {
    this.rows.set(key, (this.rows.get(key) ?? 0) + 1);
  }

  render(): string {
    const rows = [...this.rows].sort(([a], [b]) => a.localeCompare(b));
    const width = Math.max(8, ...rows.map(([k]) => k.length));
    return rows.map(([k, n]) => `  ${k.padEnd(width)}  ${String(n).padStart(6)}`).join("\n");
  }
}

/** Runs `run` over `items` (taken one at a time, as workers free up) with at most `concurrency` at once. */
async function inPool<T>(
  items: Iterable<T>,
  concurrency: number,
  run: (item: T) => Promise<void>,
): Promise<void> {
  const iterator = items[Symbol.iterator]();
  const worker = async () => {
    for (let next = iterator.next(); !next.done; next = iterator.next()) await run(next.value);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Memory {
  rss: number;
  /** Peak resident set size. */
  hwm: number;
}

/** The coordinator's resident memory (Linux /proc); undefined elsewhere. */
async function memory(pid: number | undefined): Promise<Memory | undefined> {
  if (pid === undefined) return undefined;
  const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  const kb = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN) * 1024;
  const rss = kb("VmRSS");
  const hwm = kb("VmHWM");
  return Number.isFinite(rss) && Number.isFinite(hwm) ? { rss, hwm } : undefined;
}
