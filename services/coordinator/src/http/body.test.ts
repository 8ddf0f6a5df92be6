import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isApiError } from "../errors/index.js";
import { CUT_REFUSED_UPLOAD_AFTER_MS, readBody } from "./body.js";
import { sendError, sendJson } from "./respond.js";
import { asResponse, type HttpRequest } from "./types.js";

const LIMIT = 64 * 1024;
const CHUNK = Buffer.alloc(16 * 1024, 0x20);
/** How long the clients below keep sending after the 413 before giving up. */
const KEEP_SENDING_MS = 2_000;

let h1: http.Server;
let h2: http2.Http2Server;
/** Bytes the HTTP/1.1 server read, per connection, counted when the connection closes. */
const h1BytesRead: number[] = [];
/** Bytes the HTTP/2 server's handlers were given. */
let h2BodyBytes = 0;

const handler = async (req: HttpRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
  if ("stream" in req) req.on("data", (c: Buffer) => (h2BodyBytes += c.length));
  try {
    const body = await readBody(req, LIMIT);
    sendJson(asResponse(res), 200, { size: body.length });
  } catch (e) {
    if (!isApiError(e)) throw e;
    sendError(asResponse(res), e);
  }
};

const port = (s: net.Server) => (s.address() as net.AddressInfo).port;

beforeAll(async () => {
  h1 = http.createServer((req, res) => void handler(req, res));
  h1.on("connection", (socket: net.Socket) => socket.once("close", () => h1BytesRead.push(socket.bytesRead)));
  h2 = http2.createServer((req, res) => void handler(req, res));
  await Promise.all([
    new Promise<void>((r) => h1.listen(0, "127.0.0.1", r)),
    new Promise<void>((r) => h2.listen(0, "127.0.0.1", r)),
  ]);
});

afterAll(async () => {
  h1.closeAllConnections();
  await Promise.all([new Promise((r) => h1.close(r)), new Promise((r) => h2.close(r))]);
});

/** Writes a chunked upload on a raw socket until the server closes it (or KEEP_SENDING_MS after the answer). */
function endlessChunkedUpload(headers = "Transfer-Encoding: chunked\r\n") {
  return new Promise<{ answer: string; closedAfterAnswerMs: number }>((resolve) => {
    const socket = net.connect(port(h1), "127.0.0.1");
    let answer = "";
    let answeredAt = 0;
    let finished = false;
    const finish = (closedAfterAnswerMs: number) => {
      if (finished) return;
      finished = true;
      clearInterval(timer);
      socket.destroy();
      resolve({ answer, closedAfterAnswerMs });
    };
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      answer += d;
      answeredAt ||= performance.now();
    });
    socket.on("error", () => undefined);
    socket.on("close", () => finish(answeredAt ? performance.now() - answeredAt : Number.POSITIVE_INFINITY));
    socket.write(`POST / HTTP/1.1\r\nHost: test\r\n${headers}\r\n`);
    const chunked = headers.includes("chunked");
    const timer = setInterval(() => {
      if (answeredAt && performance.now() - answeredAt > KEEP_SENDING_MS)
        return finish(Number.POSITIVE_INFINITY);
      if (socket.writableLength > 4 * CHUNK.length || socket.destroyed) return;
      if (chunked) socket.write(`${CHUNK.length.toString(16)}\r\n`);
      socket.write(CHUNK);
      if (chunked) socket.write("\r\n");
    }, 1);
  });
}

describe("readBody", () => {
  it("reads a body within the limit", async () => {
    const res = await fetch(`http://127.0.0.1:${port(h1)}/`, { method: "POST", body: "x".repeat(LIMIT) });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ size: LIMIT });
  });

  it("answers an endless HTTP/1.1 upload with 413 and closes the connection instead of draining it", async () => {
    h1BytesRead.length = 0;
    const { answer, closedAfterAnswerMs } = await endlessChunkedUpload();
    expect(answer).toMatch(/^HTTP\/1\.1 413 /);
    expect(answer).toContain('"code":"request_too_large"');
    expect(closedAfterAnswerMs).toBeLessThan(1_000);
    await new Promise((r) => setTimeout(r, 50));
    expect(h1BytesRead.length).toBe(1);
    expect(h1BytesRead[0]).toBeLessThan(LIMIT * 16);
  });

  it("refuses a declared Content-Length over the limit at once and closes the connection", async () => {
    const { answer, closedAfterAnswerMs } = await endlessChunkedUpload(`Content-Length: ${LIMIT * 1000}\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 413 /);
    expect(closedAfterAnswerMs).toBeLessThan(1_000);
  });

  it("keeps an HTTP/1.1 connection whose refused body arrived whole for the next request", async () => {
    const socket = net.connect(port(h1), "127.0.0.1");
    let text = "";
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => (text += d));
    const over = "x".repeat(LIMIT + 10);
    socket.write(`POST / HTTP/1.1\r\nHost: test\r\nContent-Length: ${over.length}\r\n\r\n${over}`);
    await new Promise((r) => setTimeout(r, CUT_REFUSED_UPLOAD_AFTER_MS + 200));
    socket.write("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nok");
    await new Promise((r) => setTimeout(r, 200));
    socket.destroy();
    expect(text).toMatch(/^HTTP\/1\.1 413 [\s\S]*HTTP\/1\.1 200 [\s\S]*\{"size":2\}$/);
  });

  it("answers an endless HTTP/2 upload with 413 and resets the stream (NO_ERROR) instead of draining it", async () => {
    h2BodyBytes = 0;
    const session = http2.connect(`http://127.0.0.1:${port(h2)}`);
    session.on("error", () => undefined);
    const stream = session.request({ ":method": "POST", ":path": "/" });
    stream.on("error", () => undefined);
    let status = 0;
    let body = "";
    let answeredAt = 0;
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      answeredAt = performance.now();
    });
    stream.setEncoding("utf8");
    stream.on("data", (d: string) => (body += d));
    // The reset ends the client's side of the stream (Node reports it through `closed`).
    let closedAt = Number.POSITIVE_INFINITY;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      const giveUp = setTimeout(resolve, 5_000);
      timer = setInterval(() => {
        if (stream.closed || stream.destroyed) {
          closedAt = performance.now();
          clearTimeout(giveUp);
          resolve();
        } else if (stream.writable && stream.writableLength < 4 * CHUNK.length) {
          stream.write(CHUNK);
        }
      }, 1);
    });
    clearInterval(timer);
    session.destroy();
    expect(status).toBe(413);
    expect(JSON.parse(body).error.code).toBe("request_too_large");
    expect(stream.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
    expect(closedAt - answeredAt).toBeLessThan(1_000);
    expect(h2BodyBytes).toBeLessThan(LIMIT * 64);
  });
});
