import http2 from "node:http2";
import https from "node:https";
import net from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestCertificate, type TestCertificate } from "../testing/test-certificates.js";
import { type ListeningServer, listenHttp } from "./protocol-sniffing-server.js";
import type { CertificatePair } from "./tls-certificate.js";

// The one-port server with TLS: ALPN picks HTTP/2 or HTTP/1.1, the guard's deadlines hold as on
// plain connections, plaintext is refused, and a new certificate reaches new connections only.

let first: TestCertificate;
let second: TestCertificate;
let server: ListeningServer;
/** Both certificates: a client trusts either, so that it can see which one it was served. */
let ca: string[];

function pair(c: TestCertificate): CertificatePair {
  return { cert: Buffer.from(c.cert), key: Buffer.from(c.key) };
}

beforeAll(async () => {
  [first, second] = await Promise.all([makeTestCertificate(0x1001), makeTestCertificate(0x2002)]);
  ca = [first.cert, second.cert];
  server = await listenHttp(
    (req, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(req.httpVersion);
    },
    "127.0.0.1",
    0,
    { tls: pair(first), limits: { headerTimeoutMs: 300, idleTimeoutMs: 10_000 } },
  );
});

afterAll(async () => {
  await server?.close();
});

/** GET / over HTTP/1.1 (https, which offers no ALPN): the body and the served certificate's serial. */
function getHttp1(): Promise<{ body: string; serial: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${server.url}/`, { ca, agent: false }, (res) => {
      const serial = (res.socket as tls.TLSSocket).getPeerCertificate().serialNumber;
      let body = "";
      res.setEncoding("utf8").on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve({ body, serial }));
    });
    req.on("error", reject);
  });
}

function getHttp2(session: http2.ClientHttp2Session): Promise<string> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":path": "/" });
    let body = "";
    stream.setEncoding("utf8").on("data", (c: string) => {
      body += c;
    });
    stream.on("end", () => resolve(body));
    stream.on("error", reject);
  });
}

function closedWithin(ms: number, socket: net.Socket): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

describe("the one-port server with TLS", () => {
  it("serves HTTP/1.1 without ALPN and HTTP/2 with ALPN h2 on the same port", async () => {
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(await getHttp1()).toEqual({ body: "1.1", serial: first.serial });
    const session = http2.connect(server.url, { ca });
    try {
      expect(await getHttp2(session)).toBe("2.0");
      expect((session.socket as tls.TLSSocket).alpnProtocol).toBe("h2");
    } finally {
      session.close();
    }
  });

  it("answers a plaintext HTTP/1.1 request 400 tls_required and closes the connection", async () => {
    const socket = net.connect(server.port, "127.0.0.1");
    let answer = "";
    socket.setEncoding("utf8").on("data", (c: string) => {
      answer += c;
    });
    socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    expect(await closedWithin(3_000, socket)).toBe(true);
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toContain('"code":"tls_required"');
    // An h2c client fails as cleanly: its session errors instead of hanging.
    const session = http2.connect(server.url.replace("https:", "http:"));
    const failed = await new Promise<boolean>((resolve) => {
      session.on("error", () => resolve(true));
      session.on("close", () => resolve(true));
      session.request({ ":path": "/" }).on("error", () => undefined);
    });
    expect(failed).toBe(true);
    session.destroy();
  });

  it("holds a TLS connection to the header deadline: in the handshake, and after it", async () => {
    // A handshake that never finishes is closed as a silent connection is.
    const stalled = net.connect(server.port, "127.0.0.1");
    stalled.on("error", () => undefined);
    stalled.write(Buffer.from([0x16, 0x03, 0x01])); // the start of a ClientHello, then nothing
    expect(await closedWithin(3_000, stalled)).toBe(true);
    // After the handshake, no request: the 408 comes over TLS.
    const quiet = tls.connect({ host: "127.0.0.1", port: server.port, ca, ALPNProtocols: ["http/1.1"] });
    let answer = "";
    quiet.setEncoding("utf8").on("data", (c: string) => {
      answer += c;
    });
    quiet.on("error", () => undefined);
    expect(await closedWithin(3_000, quiet)).toBe(true);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
  });

  it("serves a new certificate to new connections while an open HTTP/2 session keeps working", async () => {
    const session = http2.connect(server.url, { ca });
    session.on("error", () => undefined);
    try {
      expect(await getHttp2(session)).toBe("2.0");
      server.setCertificate(pair(second));
      expect((await getHttp1()).serial).toBe(second.serial);
      const fresh = http2.connect(server.url, { ca });
      await new Promise((resolve) => fresh.once("connect", resolve));
      expect((fresh.socket as tls.TLSSocket).getPeerCertificate().serialNumber).toBe(second.serial);
      fresh.close();
      // The session opened before the change still has the first certificate, and still serves.
      expect((session.socket as tls.TLSSocket).getPeerCertificate().serialNumber).toBe(first.serial);
      expect(await getHttp2(session)).toBe("2.0");
    } finally {
      session.close();
      server.setCertificate(pair(first));
    }
  });

  it("caps TLS connections per address as plain ones, and frees the slot when one closes", async () => {
    const capped = await listenHttp((_req, res) => void res.end("ok"), "127.0.0.1", 0, {
      tls: pair(first),
      limits: { maxConnectionsPerAddress: 1 },
    });
    const connect = () => {
      const s = tls.connect({ host: "127.0.0.1", port: capped.port, ca, ALPNProtocols: ["http/1.1"] });
      s.on("error", () => undefined);
      return s;
    };
    try {
      const held = connect();
      await new Promise((resolve) => held.once("secureConnect", resolve));
      expect(await closedWithin(3_000, connect())).toBe(true); // over the cap: closed at the accept
      held.destroy();
      await expect
        .poll(
          async () => {
            const next = connect();
            const ok = await new Promise<boolean>((resolve) => {
              next.once("secureConnect", () => resolve(true));
              next.once("close", () => resolve(false));
            });
            next.destroy();
            return ok;
          },
          { timeout: 5_000 },
        )
        .toBe(true);
    } finally {
      await capped.close();
    }
  });
});
