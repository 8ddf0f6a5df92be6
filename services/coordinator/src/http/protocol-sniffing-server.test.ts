import http2 from "node:http2";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ListeningServer, listenHttp } from "./protocol-sniffing-server.js";

let server: ListeningServer;
/** Requests to /hold are answered only when the test says so. */
const held: Array<() => void> = [];

beforeAll(async () => {
  server = await listenHttp(
    (req, res) => {
      if (req.url === "/hold") {
        res.writeHead(200, { "content-type": "text/plain" });
        res.write("holding");
        held.push(() => res.end());
        return;
      }
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(req.httpVersion);
    },
    "127.0.0.1",
    0,
    { limits: { headerTimeoutMs: 200, idleTimeoutMs: 200 } },
  );
});

afterAll(async () => {
  for (const release of held.splice(0)) release();
  await server?.close();
});

function closedWithin(ms: number, onClose: (resolve: () => void) => void): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    onClose(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

describe("the one-port server", () => {
  it("serves HTTP/1.1 and h2c on the same port", async () => {
    expect(await (await fetch(`${server.url}/`)).text()).toBe("1.1");
    const session = http2.connect(server.url);
    const stream = session.request({ ":path": "/" });
    let body = "";
    stream.setEncoding("utf8").on("data", (c: string) => {
      body += c;
    });
    await new Promise((r) => stream.on("end", r));
    expect(body).toBe("2.0");
    session.destroy();
  });

  it("closes a connection that never says which protocol it speaks", async () => {
    const socket = net.connect(server.port, "127.0.0.1");
    socket.on("error", () => undefined);
    socket.write("PRI * HTTP/2.0\r\n"); // a partial preface, then silence
    expect(await closedWithin(2_000, (done) => socket.once("close", done))).toBe(true);
  });

  it("sends GOAWAY to an h2c session idle with no open stream, but not while a stream is open", async () => {
    const session = http2.connect(server.url);
    session.on("error", () => undefined);
    const stream = session.request({ ":path": "/hold" });
    stream.on("data", () => undefined);
    // The stream stays open well past the idle timeout: the session is kept.
    const early = await closedWithin(700, (done) => session.once("goaway", done));
    expect(early).toBe(false);
    for (const release of held.splice(0)) release();
    await new Promise((r) => stream.on("end", r));
    // With nothing open, it goes once the idle timeout passes.
    expect(await closedWithin(2_000, (done) => session.once("goaway", done))).toBe(true);
    session.destroy();
  });
});

/** Sends one HTTP/1.1 request on `socket` and reads the response's head (status line and headers). */
function requestHead(socket: net.Socket, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = "";
    const onData = (c: Buffer) => {
      data += c.toString("latin1");
      const end = data.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.off("data", onData);
      socket.off("close", onClose);
      resolve(data.slice(0, end).toLowerCase());
    };
    const onClose = () => reject(new Error(`closed before a response to ${path}`));
    socket.on("data", onData);
    socket.once("close", onClose);
    socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
  });
}

function connected(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => resolve(socket));
    socket.once("error", reject);
  });
}

describe("a server that stops (the shutdown of a replica behind a balancer)", () => {
  it("refuses new connections, serves the requests of those it accepted with Connection: close, then resolves", async () => {
    const holding: Array<() => void> = [];
    const s = await listenHttp(
      (req, res) => {
        const answer = (body: string) => {
          res.writeHead(200);
          res.end(body);
        };
        if (req.url === "/hold") holding.push(() => answer("late"));
        else answer("ok");
      },
      "127.0.0.1",
      0,
    );
    try {
      const busy = await connected(s.port); // a request in flight, its headers not written yet
      const head = requestHead(busy, "/hold");
      const busyClosed = closedWithin(3_000, (done) => busy.once("end", done));
      while (holding.length === 0) await new Promise((r) => setTimeout(r, 5));
      const fresh = await connected(s.port); // accepted, its request still on its way
      s.drain();
      let stopped = false;
      const stopping = s.stopAccepting(10_000).then(() => {
        stopped = true;
      });
      await expect(connected(s.port)).rejects.toMatchObject({ code: "ECONNREFUSED" });
      await new Promise((r) => setTimeout(r, 100));
      expect(await requestHead(fresh, "/")).toMatch(/connection: close/);
      expect(stopped).toBe(false);
      for (const release of holding) release();
      expect(await head).toMatch(/connection: close/);
      expect(await busyClosed).toBe(true);
      await stopping;
    } finally {
      await s.close();
    }
  });

  it("keeps a kept-alive connection for its client's next request a moment, and closes one idle longer", async () => {
    const s = await listenHttp(
      (_req, res) => {
        res.writeHead(200);
        res.end("ok");
      },
      "127.0.0.1",
      0,
    );
    try {
      const quiet = await connected(s.port);
      expect(await requestHead(quiet, "/")).toMatch(/connection: keep-alive/);
      await new Promise((r) => setTimeout(r, 600)); // idle longer than the linger
      const steady = await connected(s.port);
      expect(await requestHead(steady, "/")).toMatch(/connection: keep-alive/);
      const quietClosed = new Promise((r) => quiet.once("close", r));
      s.drain();
      const stopping = s.stopAccepting(10_000);
      await quietClosed;
      // The steady client sends its next request on its kept-alive connection: served, and the last.
      expect(await requestHead(steady, "/")).toMatch(/connection: close/);
      await stopping;
    } finally {
      await s.close();
    }
  });

  it("gives up waiting at the deadline", async () => {
    const s = await listenHttp(() => undefined, "127.0.0.1", 0); // never answers
    const hung = await connected(s.port);
    hung.on("error", () => undefined);
    hung.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    await s.stopAccepting(300);
    expect(Date.now() - started).toBeLessThan(2_000);
    const hungClosed = closedWithin(3_000, (done) => hung.once("close", done));
    await s.close();
    expect(await hungClosed).toBe(true);
  });
});
