// Slow and greedy clients against a real coordinator: every deadline and cap of the one-port server
// (ConnectionGuard) and the bounded response writers, with real sockets. Deadlines are short here
// (1 s); every wait for them is ten times longer, so a loaded machine does not make them flaky.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { InferenceService } from "@darkbloom/protocol/inference/v1";
import { parseSse, ScriptedProvider } from "@darkbloom/testing";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ledgerBalanced, settledReservation } from "../testing/ledger-queries.js";
import {
  postJson,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
  waitFor,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";

const DEADLINE_MS = 1_000;
/** How long a test waits for something a deadline of DEADLINE_MS must cause. */
const PATIENCE_MS = 10 * DEADLINE_MS;

let pg_: TestPostgres;
beforeAll(async () => {
  pg_ = await startTestPostgres();
});
afterAll(async () => {
  await pg_?.stop();
});

const providers: ScriptedProvider[] = [];
async function provider(
  t: TestCoordinator,
  options: Partial<ConstructorParameters<typeof ScriptedProvider>[0]>,
) {
  const p = new ScriptedProvider({
    baseUrl: t.url,
    models: [{ id: "tiny", contextLength: 4096 }],
    ...options,
  });
  providers.push(p);
  await p.start();
  return p;
}
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.stop().catch(() => undefined)));
});

/** A raw TCP connection that records what it received and when it closed. */
class RawClient {
  readonly socket: net.Socket;
  received = "";
  readonly closed: Promise<void>;

  constructor(url: string, localAddress?: string) {
    const { hostname, port } = new URL(url);
    this.socket = net.connect({
      host: hostname,
      port: Number(port),
      ...(localAddress ? { localAddress } : {}),
    });
    this.socket.setEncoding("utf8");
    this.socket.on("data", (d: string) => {
      this.received += d;
    });
    this.socket.on("error", () => undefined);
    this.closed = new Promise((resolve) => this.socket.once("close", () => resolve()));
  }

  /** Whether the server closed the connection within `ms`. */
  closedWithin(ms: number): Promise<boolean> {
    return Promise.race([
      this.closed.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), ms)),
    ]);
  }

  /** Sends a GET and resolves with the status line of its answer (keep-alive). */
  async get(path: string): Promise<string> {
    const before = this.received.length;
    this.socket.write(`GET ${path} HTTP/1.1\r\nHost: test\r\n\r\n`);
    await waitFor(
      () => /\r\n\r\n[\s\S]*\}/.test(this.received.slice(before)),
      PATIENCE_MS,
      `answer to ${path}`,
    );
    return this.received.slice(before).split("\r\n")[0] ?? "";
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const chat = (extra: Record<string, unknown> = {}) => ({
  model: "tiny",
  messages: [{ role: "user", content: "Say hello" }],
  ...extra,
});

describe("deadlines", () => {
  let t: TestCoordinator;
  beforeAll(async () => {
    t = await startTestCoordinator(pg_.url, {
      headerTimeoutMs: DEADLINE_MS,
      bodyTimeoutMs: DEADLINE_MS,
      idleTimeoutMs: DEADLINE_MS,
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("closes a connection that sends one byte and then nothing", async () => {
    const h1 = new RawClient(t.url);
    h1.socket.write("G"); // HTTP/1.1 from its first byte
    const h2 = new RawClient(t.url);
    h2.socket.write("P"); // could still be the HTTP/2 preface
    expect(await h1.closedWithin(PATIENCE_MS)).toBe(true);
    expect(await h2.closedWithin(PATIENCE_MS)).toBe(true);
    expect(h1.received).toMatch(/^HTTP\/1\.1 408 /);
    expect(JSON.parse(h1.received.split("\r\n\r\n")[1] ?? "").error.code).toBe("request_timeout");
    expect(h2.received).toBe("");
  });

  it("closes a connection whose headers dribble in, on a new and on a kept-alive connection", async () => {
    const fresh = new RawClient(t.url);
    const kept = new RawClient(t.url);
    expect(await kept.get("/healthz")).toBe("HTTP/1.1 200 OK");
    fresh.socket.write("GET /healthz HTTP/1.1\r\n");
    kept.socket.write("GET /healthz HTTP/1.1\r\n");
    const drip = setInterval(() => {
      for (const c of [fresh, kept]) if (!c.socket.destroyed) c.socket.write("X-Drip: 1\r\n");
    }, 100);
    try {
      expect(await fresh.closedWithin(PATIENCE_MS)).toBe(true);
      expect(await kept.closedWithin(PATIENCE_MS)).toBe(true);
    } finally {
      clearInterval(drip);
    }
    expect(fresh.received).toMatch(/^HTTP\/1\.1 408 /);
    expect(kept.received).toMatch(/HTTP\/1\.1 408 /);
  });

  it("answers 408 to a body that never arrives and closes the connection, with or without a key", async () => {
    const head = (key: string | undefined) =>
      "POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n" +
      `${key ? `Authorization: Bearer ${key}\r\n` : ""}Content-Length: 1000\r\n\r\n{"model":`;
    const keyed = new RawClient(t.url);
    keyed.socket.write(head(t.apiKey));
    const anonymous = new RawClient(t.url);
    anonymous.socket.write(head(undefined));
    expect(await keyed.closedWithin(PATIENCE_MS)).toBe(true);
    expect(keyed.received).toMatch(/^HTTP\/1\.1 408 /);
    expect(JSON.parse(keyed.received.split("\r\n\r\n")[1] ?? "").error).toMatchObject({
      type: "invalid_request_error",
      code: "request_timeout",
    });
    // Without a key the 401 goes out at once, but the connection still waits for the body: it is cut.
    expect(await anonymous.closedWithin(PATIENCE_MS)).toBe(true);
    expect(anonymous.received).toMatch(/^HTTP\/1\.1 401 /);
  });

  it("answers 408 to an HTTP/2 stream whose END_STREAM never comes and resets it; the session carries on", async () => {
    const session = http2.connect(t.url);
    session.on("error", () => undefined);
    try {
      const stream = session.request({
        ":method": "POST",
        ":path": "/v1/chat/completions",
        authorization: `Bearer ${t.apiKey}`,
        "content-type": "application/json",
      });
      stream.write('{"model":');
      let body = "";
      stream.setEncoding("utf8").on("data", (d: string) => {
        body += d;
      });
      stream.on("error", () => undefined);
      const status = new Promise<number>((r) => stream.once("response", (h) => r(Number(h[":status"]))));
      const closed = new Promise<void>((r) => stream.once("close", () => r()));
      expect(await Promise.race([status, sleep(PATIENCE_MS).then(() => 0)])).toBe(408);
      expect(await Promise.race([closed.then(() => true), sleep(PATIENCE_MS).then(() => false)])).toBe(true);
      expect(JSON.parse(body).error.code).toBe("request_timeout");
      // Other streams of the same session are served.
      const health = session.request({ ":path": "/healthz" });
      health.resume();
      expect(await new Promise((r) => health.once("response", (h) => r(h[":status"])))).toBe(200);
    } finally {
      session.destroy();
    }
  });

  it("does not cut a provider's stream, which stays open for as long as the provider is connected", async () => {
    const p = await provider(t, {});
    await sleep(3 * DEADLINE_MS);
    expect(p.connected).toBe(true);
    expect(t.coordinator.registry.size).toBe(1);
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
    expect(res.status).toBe(200);
    expect((await readJson(res)).choices[0].message.content).toContain("tok15");
  });
});

describe("connection caps", () => {
  let t: TestCoordinator;
  const PER_ADDRESS = 6;
  const TOTAL = 9;
  const open: RawClient[] = [];
  beforeAll(async () => {
    t = await startTestCoordinator(pg_.url, {
      maxConnectionsPerAddress: PER_ADDRESS,
      maxConnections: TOTAL,
      maxStreamsPerConnection: 4,
      // Long enough that the held connections outlive the test on a slow machine.
      headerTimeoutMs: 120_000,
      idleTimeoutMs: 120_000,
    });
  });
  afterAll(async () => {
    for (const c of open) c.socket.destroy();
    await t?.close();
  });

  /** A connection that completed a request (so the server holds it), kept open. */
  async function held(localAddress: string): Promise<RawClient> {
    const c = new RawClient(t.url, localAddress);
    open.push(c);
    expect(await c.get("/healthz")).toBe("HTTP/1.1 200 OK");
    return c;
  }

  it("closes connections over the per-address cap at once, while the open ones and other addresses are served", async () => {
    const mine = [];
    for (let i = 0; i < PER_ADDRESS; i++) mine.push(await held("127.0.0.1"));
    const over = new RawClient(t.url, "127.0.0.1");
    over.socket.write("GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
    expect(await over.closedWithin(PATIENCE_MS)).toBe(true);
    expect(over.received).toBe("");
    // The open connections still work, and another address is not affected.
    expect(await mine[0]?.get("/healthz")).toBe("HTTP/1.1 200 OK");
    const other = await held("127.0.0.2");
    expect(await other.get("/healthz")).toBe("HTTP/1.1 200 OK");
    // A slot freed is a slot a new connection gets.
    mine[0]?.socket.destroy();
    await mine[0]?.closed;
    let fresh: RawClient | undefined;
    for (const until = Date.now() + PATIENCE_MS; Date.now() < until; await sleep(50)) {
      const c = new RawClient(t.url, "127.0.0.1");
      c.socket.write("GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
      await Promise.race([
        c.closed,
        waitFor(() => c.received.includes("}"), PATIENCE_MS).catch(() => undefined),
      ]);
      if (c.received.startsWith("HTTP/1.1 200 ")) {
        fresh = c;
        open.push(c);
        break;
      }
      c.socket.destroy();
    }
    expect(fresh, "a request from a freed slot").toBeDefined();
  });

  it("closes connections over the total cap at once", async () => {
    // PER_ADDRESS from 127.0.0.1 and one from 127.0.0.2 are open: fill up to the total from 127.0.0.3.
    while (open.filter((c) => !c.socket.destroyed).length < TOTAL) await held("127.0.0.3");
    const over = new RawClient(t.url, "127.0.0.4");
    over.socket.write("GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
    expect(await over.closedWithin(PATIENCE_MS)).toBe(true);
    expect(over.received).toBe("");
    const metrics = await t.coordinator.metrics.registry.getSingleMetricAsString(
      "darkbloom_connection_limit_hits_total",
    );
    expect(metrics).toMatch(/limit="connections_per_address"} [1-9]/);
    expect(metrics).toMatch(/limit="connections_total"} [1-9]/);
  });

  it("tells HTTP/2 clients the cap on concurrent streams", async () => {
    for (const c of open.splice(0)) c.socket.destroy();
    let session: http2.ClientHttp2Session | undefined;
    for (const until = Date.now() + PATIENCE_MS; !session && Date.now() < until; await sleep(50)) {
      const s = http2.connect(t.url);
      s.on("error", () => undefined);
      const ok = await new Promise<boolean>((r) => {
        s.once("remoteSettings", () => r(true));
        s.once("close", () => r(false));
      });
      if (ok) session = s;
    }
    expect(session?.remoteSettings.maxConcurrentStreams).toBe(4);
    session?.destroy();
  });
});

/** A token of 24 bytes: 16 to a chunk make 384 bytes of text per chunk. */
const TOKEN = "abcdefghijklmnopqrstuvw ";
const TOKENS_PER_CHUNK = 16;
/** A script of `bytes` of text (at least), as 16-token chunks sent as fast as they can go. */
function bulk(bytes: number) {
  const tokens = Array<string>(Math.ceil(bytes / TOKEN.length)).fill(TOKEN);
  return { script: () => ({ tokens, tokensPerChunk: TOKENS_PER_CHUNK }), maxTokens: tokens.length };
}
const BIG_MODEL = [{ id: "tiny", contextLength: 2_000_000 }];

/** Completion tokens in an SSE body's content deltas (every token is TOKEN). */
function tokensIn(events: { data: string }[]): number {
  let text = "";
  for (const e of events) {
    if (e.data === "[DONE]") continue;
    const chunk = JSON.parse(e.data) as { choices?: { delta?: { content?: string } }[] };
    text += chunk.choices?.[0]?.delta?.content ?? "";
  }
  return text.length / TOKEN.length;
}

describe("a consumer that does not read", () => {
  let t: TestCoordinator;
  let pool: pg.Pool;
  const BUFFER = 256 * 1024;
  beforeAll(async () => {
    t = await startTestCoordinator(pg_.url, {
      maxResponseBufferBytes: BUFFER,
      // The tests that read the rest (and the error event) do so within milliseconds of seeing the
      // provider cancelled; the one that never reads waits for this.
      sendTimeoutMs: 5 * DEADLINE_MS,
    });
    await t.coordinator.catalog.upsert({
      id: "tiny",
      inputMicroUsdPerMillion: 1_000_000n,
      outputMicroUsdPerMillion: 2_000_000n,
    });
    pool = new pg.Pool({ connectionString: t.coordinator.databaseUrl });
  });
  afterAll(async () => {
    await pool?.end();
    await t?.close();
  });

  /**
   * Streams `planned` bytes of text to a consumer that reads nothing until the provider has been
   * cancelled, then reads everything left. Returns what it received and the request id.
   */
  async function stall(transport: "h1" | "h2", planned: number) {
    const { script, maxTokens } = bulk(planned);
    const p = await provider(t, { models: BIG_MODEL, maxBatch: 1, script });
    const body = JSON.stringify(chat({ stream: true, max_tokens: maxTokens }));
    const headers = { authorization: `Bearer ${t.apiKey}`, "content-type": "application/json" };
    let text = "";
    let requestId = "";
    let ended: Promise<void>;
    let resume: () => void;
    if (transport === "h1") {
      const { hostname, port } = new URL(t.url);
      const req = http.request({
        host: hostname,
        port,
        method: "POST",
        path: "/v1/chat/completions",
        headers,
      });
      req.end(body);
      const res = await new Promise<http.IncomingMessage>((r) => req.once("response", r));
      res.pause();
      requestId = String(res.headers["x-request-id"]);
      res.setEncoding("utf8").on("data", (d: string) => {
        text += d;
      });
      res.on("error", () => undefined);
      ended = new Promise<void>((r) => res.once("close", () => r()));
      resume = () => res.resume();
    } else {
      const session = http2.connect(t.url);
      session.on("error", () => undefined);
      const stream = session.request({ ":method": "POST", ":path": "/v1/chat/completions", ...headers });
      stream.end(body);
      const head = await new Promise<http2.IncomingHttpHeaders>((r) => stream.once("response", r));
      stream.pause();
      requestId = String(head["x-request-id"]);
      stream.setEncoding("utf8").on("data", (d: string) => {
        text += d;
      });
      stream.on("error", () => undefined);
      ended = new Promise<void>((r) => stream.once("close", () => r())).then(() => void session.close());
      resume = () => stream.resume();
    }
    // The coordinator cuts the response and cancels the provider while the consumer reads nothing.
    await waitFor(() => p.cancelled.includes(requestId), 60_000, "the provider to be cancelled");
    resume();
    await ended;
    return { p, text, requestId };
  }

  it.each([
    ["HTTP/1.1", "h1", 12 * 1024 * 1024],
    ["HTTP/2", "h2", 4 * 1024 * 1024],
  ] as const)(
    "over %s: holds a bounded amount, cuts the response with an error event, frees the slot and charges what was sent",
    async (_name, transport, planned) => {
      const { p, text, requestId } = await stall(transport, planned);
      // Far less than planned went out: the kernel's buffers, the response's bounded one and the error.
      expect(text.length).toBeLessThan(planned / 2);
      const { events } = parseSse(text);
      expect(events.at(-1)?.data).toBe("[DONE]");
      expect(JSON.parse(events.at(-2)?.data ?? "{}").error).toMatchObject({
        type: "invalid_request_error",
        code: "response_not_read",
      });
      expect(p.completed).not.toContain(requestId);
      const metrics = await t.coordinator.metrics.registry.getSingleMetricAsString(
        "darkbloom_connection_limit_hits_total",
      );
      expect(metrics).toMatch(/limit="response_buffer"} [1-9]/);

      // Settled as a cancelled stream: every token sent was charged, nothing more.
      const row = await settledReservation(pool, requestId, PATIENCE_MS);
      expect(row).toMatchObject({ state: "settled", outcome: "cancelled" });
      expect(row?.completion_tokens).toBe(tokensIn(events));
      expect(BigInt(row?.charged ?? "0")).toBeGreaterThan(0n);
      expect(await ledgerBalanced(pool)).toBe(true);

      // The provider's one slot is free again.
      const next = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat({ max_tokens: 4 }));
      expect(next.status).toBe(200);
    },
    120_000,
  );

  it("closes the cut response of a consumer that never reads, once the send timeout has passed", async () => {
    const { script, maxTokens } = bulk(4 * 1024 * 1024);
    const p = await provider(t, { models: BIG_MODEL, maxBatch: 1, script });
    const session = http2.connect(t.url);
    session.on("error", () => undefined);
    try {
      const stream = session.request({
        ":method": "POST",
        ":path": "/v1/chat/completions",
        authorization: `Bearer ${t.apiKey}`,
        "content-type": "application/json",
      });
      stream.on("error", () => undefined);
      stream.end(JSON.stringify(chat({ stream: true, max_tokens: maxTokens })));
      const head = await new Promise<http2.IncomingHttpHeaders>((r) => stream.once("response", r));
      stream.pause();
      const requestId = String(head["x-request-id"]);
      await waitFor(() => p.cancelled.includes(requestId), 60_000, "the provider to be cancelled");
      const closed = new Promise<void>((r) => stream.once("close", () => r()));
      expect(
        await Promise.race([closed.then(() => true), sleep(10 * 5 * DEADLINE_MS).then(() => false)]),
      ).toBe(true);
      expect(stream.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
      await settledReservation(pool, requestId, PATIENCE_MS);
    } finally {
      session.destroy();
    }
  }, 120_000);

  it("over the typed Connect API: cuts the stream, cancels the provider, and closes it once the send timeout passes", async () => {
    const { script, maxTokens } = bulk(4 * 1024 * 1024);
    const p = await provider(t, { models: BIG_MODEL, maxBatch: 1, script });
    const hits = async () =>
      (
        await t.coordinator.metrics.registry.getSingleMetricAsString("darkbloom_connection_limit_hits_total")
      ).match(/limit="response_buffer"} (\d+)/)?.[1] ?? "0";
    const before = Number(await hits());
    const session = http2.connect(t.url);
    session.on("error", () => undefined);
    try {
      const stream = session.request({
        ":method": "POST",
        ":path": "/darkbloom.inference.v1.InferenceService/StreamChatCompletion",
        authorization: `Bearer ${t.apiKey}`,
        "content-type": "application/connect+json",
      });
      stream.on("error", () => undefined);
      const message = Buffer.from(
        JSON.stringify({
          model: "tiny",
          messages: [{ role: "user", content: "hi" }],
          sampling: { maxTokens },
        }),
      );
      const envelope = Buffer.alloc(5);
      envelope.writeUInt32BE(message.length, 1);
      stream.end(Buffer.concat([envelope, message]));
      await new Promise((r) => stream.once("response", r));
      stream.pause();
      await waitFor(() => p.cancelled.length > 0, 60_000, "the provider to be cancelled");
      expect(Number(await hits())).toBe(before + 1);
      const closed = new Promise<void>((r) => stream.once("close", () => r()));
      expect(
        await Promise.race([closed.then(() => true), sleep(10 * 5 * DEADLINE_MS).then(() => false)]),
      ).toBe(true);
      expect(stream.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
      expect(await ledgerBalanced(pool)).toBe(true);
    } finally {
      session.destroy();
    }
  }, 120_000);
});

describe("response size and send timeout", () => {
  let t: TestCoordinator;
  let pool: pg.Pool;
  const LIMIT = 1024 * 1024;
  beforeAll(async () => {
    t = await startTestCoordinator(pg_.url, { maxResponseBytes: LIMIT, sendTimeoutMs: DEADLINE_MS });
    await t.coordinator.catalog.upsert({
      id: "tiny",
      inputMicroUsdPerMillion: 1_000_000n,
      outputMicroUsdPerMillion: 2_000_000n,
    });
    pool = new pg.Pool({ connectionString: t.coordinator.databaseUrl });
  });
  afterAll(async () => {
    await pool?.end();
    await t?.close();
  });

  const settled = (requestId: string) => settledReservation(pool, requestId, PATIENCE_MS);

  it("ends a stream that grows past the limit with an error event and charges the tokens sent", async () => {
    const { script, maxTokens } = bulk(2 * LIMIT);
    const p = await provider(t, { models: BIG_MODEL, script });
    const res = await postJson(
      t.url,
      "/v1/chat/completions",
      t.apiKey,
      chat({ stream: true, max_tokens: maxTokens }),
    );
    const requestId = res.headers.get("x-request-id") ?? "";
    const text = await res.text();
    // The event that passed the limit still went out, then the error and [DONE].
    expect(Buffer.byteLength(text)).toBeLessThan(LIMIT + 4096);
    const { events } = parseSse(text);
    expect(events.at(-1)?.data).toBe("[DONE]");
    expect(JSON.parse(events.at(-2)?.data ?? "{}").error).toMatchObject({
      type: "provider_error",
      code: "response_too_large",
    });
    await waitFor(() => p.cancelled.includes(requestId), PATIENCE_MS, "the provider to be cancelled");
    const row = await settled(requestId);
    expect(row).toMatchObject({ outcome: "cancelled", completion_tokens: tokensIn(events) });
    expect(await ledgerBalanced(pool)).toBe(true);
  });

  it("answers 502 to a whole response that grows past the limit, and charges nothing", async () => {
    const { script, maxTokens } = bulk(2 * LIMIT);
    const p = await provider(t, { models: BIG_MODEL, script });
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat({ max_tokens: maxTokens }));
    expect(res.status).toBe(502);
    expect((await readJson(res)).error).toMatchObject({ type: "provider_error", code: "response_too_large" });
    const requestId = res.headers.get("x-request-id") ?? "";
    await waitFor(() => p.cancelled.includes(requestId), PATIENCE_MS, "the provider to be cancelled");
    expect(await settled(requestId)).toMatchObject({ outcome: "cancelled", charged: "0" });
    expect(await ledgerBalanced(pool)).toBe(true);
  });

  it("fails a typed Connect call whose response grows past the limit, and charges nothing", async () => {
    const { script, maxTokens } = bulk(2 * LIMIT);
    const p = await provider(t, { models: BIG_MODEL, script });
    const client = createClient(
      InferenceService,
      createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" }),
    );
    const call = client.createChatCompletion(
      { model: "tiny", messages: [{ role: "user", content: "hi" }], sampling: { maxTokens } },
      { headers: { authorization: `Bearer ${t.apiKey}` } },
    );
    const error = await call.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).metadata.get("x-error-code")).toBe("response_too_large");
    await waitFor(() => p.cancelled.length === 1, PATIENCE_MS, "the provider to be cancelled");
    const { rows } = await pool.query(
      "SELECT state, outcome, charged_micro_usd::text AS charged FROM reservations WHERE request_id = $1",
      [p.cancelled[0]],
    );
    expect(rows[0]).toMatchObject({ state: "settled", outcome: "cancelled", charged: "0" });
  });

  /** An h2c request whose response is not read after its headers; resolves when the server resets it. */
  async function unread(body: Record<string, unknown>) {
    const session = http2.connect(t.url);
    session.on("error", () => undefined);
    const stream = session.request({
      ":method": "POST",
      ":path": "/v1/chat/completions",
      authorization: `Bearer ${t.apiKey}`,
      "content-type": "application/json",
    });
    stream.on("error", () => undefined);
    stream.end(JSON.stringify(body));
    const head = await new Promise<http2.IncomingHttpHeaders>((r) => stream.once("response", r));
    stream.pause();
    const closed = await Promise.race([
      new Promise<boolean>((r) => stream.once("close", () => r(true))),
      sleep(PATIENCE_MS).then(() => false),
    ]);
    session.destroy();
    return { closed, requestId: String(head["x-request-id"]) };
  }

  it("closes a whole response its consumer does not read", async () => {
    const { script, maxTokens } = bulk(LIMIT - 64 * 1024);
    await provider(t, { models: BIG_MODEL, script });
    const { closed, requestId } = await unread(chat({ max_tokens: maxTokens }));
    expect(closed).toBe(true);
    // Completed before the consumer stalled: charged in full.
    expect(await settled(requestId)).toMatchObject({ outcome: "completed" });
  });

  it("closes a stream its consumer stops reading, however little waits, and cancels the provider", async () => {
    // Generation takes 20 s or more (16 ms a chunk): the cut comes long before it would end.
    const tokens = Array<string>(20_000).fill(TOKEN);
    const p = await provider(t, {
      models: BIG_MODEL,
      script: () => ({ tokens, tokensPerChunk: TOKENS_PER_CHUNK, interTokenDelayMs: 1 }),
    });
    const { closed, requestId } = await unread(chat({ stream: true, max_tokens: tokens.length }));
    expect(closed).toBe(true);
    await waitFor(() => p.cancelled.includes(requestId), PATIENCE_MS, "the provider to be cancelled");
    expect(await settled(requestId)).toMatchObject({ outcome: "cancelled" });
    const metrics = await t.coordinator.metrics.registry.getSingleMetricAsString(
      "darkbloom_connection_limit_hits_total",
    );
    expect(metrics).toMatch(/limit="send_timeout"} [1-9]/);
  });
});
