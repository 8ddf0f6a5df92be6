import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { Handler } from "./types.js";
import { asResponse } from "./types.js";

/** The first bytes of every HTTP/2 prior-knowledge (h2c) connection. */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export interface ListenOptions {
  /** A connection that has not said which protocol it speaks after this long is closed (default 30 s). */
  sniffTimeoutMs?: number;
  /**
   * An HTTP/2 session with no open stream for this long gets GOAWAY (default 65 s, HTTP/1.1's
   * keep-alive timeout). A provider's session always has its stream open.
   */
  idleSessionTimeoutMs?: number;
}

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
export async function listenHttp(
  handler: Handler,
  host: string,
  port: number,
  options: ListenOptions = {},
): Promise<ListeningServer> {
  const sniffTimeoutMs = options.sniffTimeoutMs ?? 30_000;
  const idleSessionTimeoutMs = options.idleSessionTimeoutMs ?? 65_000;
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
    // Idle sessions are closed, as HTTP/1.1 closes idle keep-alive connections: otherwise a client
    // (or anyone) could hold connections open for ever without a request.
    let open = 0;
    let idle: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        if (open === 0 && !s.closed) s.close();
      }, idleSessionTimeoutMs);
      idle.unref();
    };
    s.on("stream", (stream: http2.ServerHttp2Stream) => {
      open++;
      clearTimeout(idle);
      stream.once("close", () => {
        if (--open === 0) arm();
      });
    });
    arm();
    s.once("close", () => {
      clearTimeout(idle);
      sessions.delete(s);
    });
  });
  const sockets = new Set<net.Socket>();
  const tcp = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    sniff(socket, sniffTimeoutMs, (isH2) => (isH2 ? h2 : h1).emit("connection", socket));
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
function sniff(socket: net.Socket, timeoutMs: number, decide: (isH2: boolean) => void): void {
  let buffered = Buffer.alloc(0);
  // A connection that says nothing (or dribbles a partial preface) does not hold a socket for ever.
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  timer.unref();
  const onReadable = () => {
    let chunk: Buffer | null;
    // biome-ignore lint/suspicious/noAssignInExpressions: the read loop idiom
    while ((chunk = socket.read() as Buffer | null) !== null) buffered = Buffer.concat([buffered, chunk]);
    const n = Math.min(buffered.length, H2_PREFACE.length);
    const matches = buffered.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    if (matches && buffered.length < H2_PREFACE.length) return; // need more bytes to decide
    clearTimeout(timer);
    socket.off("readable", onReadable);
    socket.off("end", onEnd);
    socket.unshift(buffered);
    decide(matches);
  };
  const onEnd = () => {
    clearTimeout(timer);
    socket.destroy();
  };
  socket.on("readable", onReadable);
  socket.once("end", onEnd);
}
