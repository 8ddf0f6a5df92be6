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
