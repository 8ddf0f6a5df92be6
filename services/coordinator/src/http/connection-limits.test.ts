// Slow and numerous clients against a real coordinator: every deadline and cap of the one-port
// server (ConnectionGuard), with real sockets. Deadlines are short here (1 s); every wait for them is
// ten times longer, so a loaded machine does not make them flaky.
import http2 from "node:http2";
import net from "node:net";
import { ScriptedProvider } from "@darkbloom/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startTestPostgres, type TestPostgres } from "../store/test-database.js";
import {
  postJson,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
  waitFor,
} from "../test-support/test-coordinator.js";

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
