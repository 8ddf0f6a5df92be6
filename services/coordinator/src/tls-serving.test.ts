import http2 from "node:http2";
import https from "node:https";
import type tls from "node:tls";
import { ScriptedProvider } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestCertificate, SecretVolume, type TestCertificate } from "./testing/test-certificates.js";
import { type AnyJson, startTestCoordinator, type TestCoordinator } from "./testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "./testing/test-database.js";

// A coordinator serving TLS on its one port, its certificate in a directory laid out as a
// Kubernetes Secret volume: providers dial it over https, consumers reach it with HTTP/1.1 and
// HTTP/2, and a renewed certificate reaches new connections without a restart.

let pg: TestPostgres;
let volume: SecretVolume;
let t: TestCoordinator;
let provider: ScriptedProvider;
let first: TestCertificate;
let second: TestCertificate;
/** Both certificates are trusted, so that a client can tell which one it was served. */
let ca: string[];

beforeAll(async () => {
  [pg, first, second] = await Promise.all([
    startTestPostgres(),
    makeTestCertificate(0x1001),
    makeTestCertificate(0x2002),
  ]);
  ca = [first.cert, second.cert];
  volume = await SecretVolume.create(first);
  t = await startTestCoordinator(pg.url, { tlsCertFile: volume.certFile, tlsKeyFile: volume.keyFile });
  provider = new ScriptedProvider({ baseUrl: t.url, ca, models: [{ id: "tiny", contextLength: 4096 }] });
  await provider.start();
});

afterAll(async () => {
  await provider?.stop();
  await t?.close();
  await volume?.remove();
  await pg?.stop();
});

const chat = (stream: boolean) => ({
  model: "tiny",
  messages: [{ role: "user", content: "hello over TLS" }],
  max_tokens: 16,
  stream,
});

/** A request over HTTP/1.1 on a connection of its own: the status, the body and the certificate's serial. */
function request(
  method: "GET" | "POST",
  path: string,
  body?: unknown,
): Promise<{ status: number; text: string; serial: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { authorization: `Bearer ${t.apiKey}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    const req = https.request(new URL(path, t.url), { method, headers, ca, agent: false }, (res) => {
      const serial = (res.socket as tls.TLSSocket).getPeerCertificate().serialNumber;
      let text = "";
      res.setEncoding("utf8").on("data", (c: string) => {
        text += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text, serial }));
    });
    req.on("error", reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/** A request on an HTTP/2 session: the status and the body. */
function request2(
  session: http2.ClientHttp2Session,
  method: "GET" | "POST",
  path: string,
  body?: unknown,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const headers: http2.OutgoingHttpHeaders = {
      ":method": method,
      ":path": path,
      authorization: `Bearer ${t.apiKey}`,
    };
    if (body !== undefined) headers["content-type"] = "application/json";
    const stream = session.request(headers);
    let status = 0;
    let text = "";
    stream.on("response", (h) => {
      status = Number(h[":status"]);
    });
    stream.setEncoding("utf8").on("data", (c: string) => {
      text += c;
    });
    stream.on("end", () => resolve({ status, text }));
    stream.on("error", reject);
    stream.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

const allTokens = Array.from({ length: 16 }, (_, i) => `tok${i} `).join("");

describe("a coordinator serving TLS", () => {
  it("serves a provider that dialed https:// to consumers over HTTP/1.1 and HTTP/2", async () => {
    expect(t.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(t.coordinator.registry.get(provider.providerId ?? "")).toBeDefined();

    const whole = await request("POST", "/v1/chat/completions", chat(false));
    expect(whole.status).toBe(200);
    expect(whole.serial).toBe(first.serial);
    const body: AnyJson = JSON.parse(whole.text);
    expect(body.choices[0].message.content).toBe(allTokens);

    const session = http2.connect(t.url, { ca });
    try {
      const streamed = await request2(session, "POST", "/v1/chat/completions", chat(true));
      expect(streamed.status).toBe(200);
      expect(streamed.text).toContain('"content":"tok15 "');
      expect(streamed.text.match(/data: \[DONE\]/g)).toHaveLength(1);
    } finally {
      session.close();
    }
  });

  it("takes a renewed certificate without a restart: new connections get it, open ones keep working", async () => {
    const session = http2.connect(t.url, { ca });
    session.on("error", () => undefined);
    try {
      expect((await request2(session, "GET", "/healthz")).status).toBe(200);
      await volume.update(second);
      await expect
        .poll(async () => (await request("GET", "/healthz")).serial, { timeout: 10_000 })
        .toBe(second.serial);
      // The session opened before the renewal, and the provider's stream (it does not reconnect), carry on.
      expect((session.socket as tls.TLSSocket).getPeerCertificate().serialNumber).toBe(first.serial);
      expect((await request2(session, "GET", "/healthz")).status).toBe(200);
      const served = await request2(session, "POST", "/v1/chat/completions", chat(false));
      expect(served.status).toBe(200);
      expect(JSON.parse(served.text).choices[0].message.content).toBe(allTokens);
    } finally {
      session.close();
    }
  });
});
