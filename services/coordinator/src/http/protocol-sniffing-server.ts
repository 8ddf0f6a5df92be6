import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { Handler } from "./types.js";
import { asResponse } from "./types.js";

/** The first bytes of every HTTP/2 prior-knowledge (h2c) connection. */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export interface ListeningServer {
  /** http://host:port */
  url: string;
  port: number;
  /** Stops accepting connections and closes them (HTTP/2 sessions get GOAWAY). */
  close(): Promise<void>;
}

/**
 * One TCP port for both protocols: connections that open with the HTTP/2 preface (provider streams,
 * gRPC clients, h2c consumers) go to an HTTP/2 server, everything else to an HTTP/1.1 server. Both
 * hand requests to the same handler.
 */
export async function listenHttp(handler: Handler, host: string, port: number): Promise<ListeningServer> {
  const dispatch = (
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ) => {
    void handler(req, asResponse(res));
  };
  const h1 = http.createServer(
    { keepAliveTimeout: 65_000, requestTimeout: 0, headersTimeout: 60_000 },
    dispatch,
  );
  const h2 = http2.createServer(
    { settings: { maxConcurrentStreams: 10_000, initialWindowSize: 1 << 20 }, maxSessionMemory: 64 },
    dispatch,
  );
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  const sockets = new Set<net.Socket>();
  const tcp = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    sniff(socket, (isH2) => (isH2 ? h2 : h1).emit("connection", socket));
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(port, host, () => {
      tcp.off("error", reject);
      resolve();
    });
  });
  const address = tcp.address() as net.AddressInfo;
  const urlHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${urlHost}:${address.port}`,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        tcp.close(() => resolve());
        for (const s of sessions) s.close();
        h1.closeIdleConnections();
        setTimeout(() => {
          for (const s of sockets) s.destroy();
        }, 1_000).unref();
        h1.closeAllConnections();
      }),
  };
}

/** Reads enough of the first bytes to tell HTTP/2 prior knowledge from HTTP/1.x, then puts them back. */
function sniff(socket: net.Socket, decide: (isH2: boolean) => void): void {
  let buffered = Buffer.alloc(0);
  const onReadable = () => {
    let chunk: Buffer | null;
    // biome-ignore lint/suspicious/noAssignInExpressions: the read loop idiom
    while ((chunk = socket.read() as Buffer | null) !== null) buffered = Buffer.concat([buffered, chunk]);
    const n = Math.min(buffered.length, H2_PREFACE.length);
    const matches = buffered.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    if (matches && buffered.length < H2_PREFACE.length) return; // need more bytes to decide
    socket.off("readable", onReadable);
    socket.off("end", onEnd);
    socket.unshift(buffered);
    decide(matches);
  };
  const onEnd = () => socket.destroy();
  socket.on("readable", onReadable);
  socket.once("end", onEnd);
}
