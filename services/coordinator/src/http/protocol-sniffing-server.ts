import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import {
  ConnectionGuard,
  type ConnectionLimits,
  connectionLimits,
  type LimitName,
} from "./connection-guard.js";
import type { Handler, HttpRequest } from "./types.js";
import { asResponse } from "./types.js";

/** The first bytes of every HTTP/2 prior-knowledge (h2c) connection. */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export interface ListenOptions {
  /** Deadlines and caps (defaults: CONNECTION_LIMIT_DEFAULTS in config.ts). */
  limits?: Partial<ConnectionLimits>;
  /**
   * Requests whose body streams for as long as their response (the provider's bidi stream): the body
   * deadline starts only once their response has ended.
   */
  isRequestStream?: (req: HttpRequest) => boolean;
  /** Told each time a limit refuses a connection or cuts a request (metrics; never a log line each). */
  onLimit?: (limit: LimitName) => void;
  /** An accept failed (EMFILE when the process is out of file descriptors): the server carries on. */
  onAcceptError?: (error: Error) => void;
}

export interface ListeningServer {
  /** http://host:port */
  url: string;
  port: number;
  /**
   * The server is about to stop: every HTTP/1.1 response from now on says `Connection: close`, so
   * that keep-alive clients send their next request on a new connection (behind a load balancer, to
   * another replica) instead of one this server is about to close under them.
   */
  drain(): void;
  /** Stops accepting connections and closes them (HTTP/2 sessions get GOAWAY). */
  close(): Promise<void>;
}

/**
 * One TCP port for both protocols: connections that open with the HTTP/2 preface (provider streams,
 * gRPC clients, h2c consumers) go to an HTTP/2 server, everything else to an HTTP/1.1 server. Both
 * hand requests to the same handler. Deadlines and connection caps: ConnectionGuard.
 */
export async function listenHttp(
  handler: Handler,
  host: string,
  port: number,
  options: ListenOptions = {},
): Promise<ListeningServer> {
  const limits = connectionLimits(options.limits);
  const onLimit = options.onLimit ?? (() => undefined);
  const guard = new ConnectionGuard(limits, options.isRequestStream ?? (() => false), onLimit);
  let draining = false;
  const dispatch = (
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ) => {
    if (draining && res instanceof http.ServerResponse) res.shouldKeepAlive = false;
    const response = asResponse(res);
    // Before the handler, which may write (and finish) synchronously.
    guard.request(req, response);
    void handler(req, response);
  };
  // Node's header and request timeouts are not used: its checker never sees sockets handed over with
  // emit("connection"). The guard keeps them; keepAliveTimeout still works (it is a socket timeout).
  const h1 = http.createServer(
    { keepAliveTimeout: limits.idleTimeoutMs, requestTimeout: 0, headersTimeout: 60_000 },
    dispatch,
  );
  const h2 = http2.createServer(
    {
      settings: { maxConcurrentStreams: limits.maxStreamsPerConnection, initialWindowSize: 1 << 20 },
      maxSessionMemory: 64,
    },
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
      }, limits.idleTimeoutMs);
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
    socket.on("error", () => socket.destroy());
    if (!guard.admit(socket)) return;
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    sniff(socket, (isH2) => {
      guard.handedOver(socket, isH2 ? "h2" : "h1");
      (isH2 ? h2 : h1).emit("connection", socket);
    });
  });
  // Over the total, Node closes the connection before it becomes a socket (the cheapest refusal).
  tcp.maxConnections = limits.maxConnections;
  tcp.on("drop", () => onLimit("connections_total"));
  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(port, host, () => {
      tcp.off("error", reject);
      resolve();
    });
  });
  // Without a listener, an accept error (EMFILE) would be thrown and end the process.
  tcp.on("error", (e) => options.onAcceptError?.(e));
  const address = tcp.address() as net.AddressInfo;
  const urlHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${urlHost}:${address.port}`,
    port: address.port,
    drain: () => {
      draining = true;
    },
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

/**
 * Reads enough of the first bytes to tell HTTP/2 prior knowledge from HTTP/1.x, then puts them back.
 * A connection that says nothing (or dribbles a partial preface) is closed by the guard's header
 * deadline.
 */
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
