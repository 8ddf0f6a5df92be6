import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { ApiError } from "../errors/index.js";
import {
  ConnectionGuard,
  type ConnectionLimits,
  connectionLimits,
  type LimitName,
} from "./connection-guard.js";
import type { CertificatePair } from "./tls-certificate.js";
import type { Handler, HttpRequest } from "./types.js";
import { asResponse } from "./types.js";

/** The first bytes of every HTTP/2 prior-knowledge (h2c) connection. */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** The first byte of a TLS connection: a handshake record. */
const TLS_HANDSHAKE = 0x16;
/** How long a connection with no request in flight is kept once the server stops accepting. */
const IDLE_LINGER_MS = 500;

/**
 * A connection that is not HTTP/2: sniffing, in its TLS handshake or HTTP/1.1. `idleSince` is when
 * it last had no request in flight (its accept, or its last response's end); undefined while one is.
 */
interface Http1Connection {
  idleSince: number | undefined;
  responses: Set<http.ServerResponse>;
}

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
  /**
   * Serve TLS with this certificate (replaced with setCertificate): ALPN h2 goes to HTTP/2, http/1.1
   * or none to HTTP/1.1. Plaintext connections are then refused.
   */
  tls?: CertificatePair;
}

export interface ListeningServer {
  /** http://host:port, or https:// with TLS */
  url: string;
  port: number;
  /**
   * The server is about to stop: every HTTP/1.1 response from now on says `Connection: close`, so
   * that keep-alive clients send their next request on a new connection (behind a load balancer, to
   * another replica) instead of one this server is about to close under them.
   */
  drain(): void;
  /**
   * Stops accepting connections (behind a Service or balancer, new ones go to another replica) and
   * resolves once no HTTP/1.1 connection is left, or at the deadline. Connections accepted before
   * may still bring their request, which is served (with `Connection: close`); a connection with no
   * request in flight is closed once it has been idle for IDLE_LINGER_MS, long enough for a client
   * reading a kept-alive response to send its next request on it rather than into a closing socket.
   * HTTP/2 sessions are left to close().
   */
  stopAccepting(deadlineMs: number): Promise<void>;
  /** Connections from now on are served this certificate (TLS only); open ones keep theirs. */
  setCertificate(pair: CertificatePair): void;
  /** Stops accepting connections and closes them (HTTP/2 sessions get GOAWAY). */
  close(): Promise<void>;
}

/**
 * One TCP port for both protocols: connections that open with the HTTP/2 preface (provider streams,
 * gRPC clients, h2c consumers) go to an HTTP/2 server, everything else to an HTTP/1.1 server. Both
 * hand requests to the same handler. With TLS, ALPN chooses instead, after the handshake, and the
 * TLS sockets go to the same two servers. Deadlines and connection caps: ConnectionGuard, for TLS as
 * for plain connections (it counts the TCP connection from its accept; the handshake counts against
 * the header deadline).
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
  // Keyed by the accepted socket until the hand-over, then (HTTP/1.1) by the socket requests run on.
  const http1 = new Map<net.Socket, Http1Connection>();
  const dispatch = (
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ) => {
    if (res instanceof http.ServerResponse) {
      if (draining) res.shouldKeepAlive = false;
      const conn = http1.get(req.socket);
      if (conn) {
        conn.idleSince = undefined;
        conn.responses.add(res);
        res.once("close", () => {
          conn.responses.delete(res);
          if (conn.responses.size === 0) conn.idleSince = Date.now();
        });
      }
    }
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
  const handOver = (socket: net.Socket, protocol: "h1" | "h2", served: net.Socket = socket) => {
    guard.handedOver(socket, protocol, served);
    const conn = http1.get(socket);
    http1.delete(socket);
    if (protocol === "h1" && conn && !served.destroyed) {
      http1.set(served, conn);
      served.once("close", () => http1.delete(served));
    }
    (protocol === "h2" ? h2 : h1).emit("connection", served);
  };
  const secure = options.tls && tlsServer(options.tls, handOver);
  const sockets = new Set<net.Socket>();
  const tcp = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => socket.destroy());
    if (!guard.admit(socket)) return;
    sockets.add(socket);
    http1.set(socket, { idleSince: Date.now(), responses: new Set() });
    socket.once("close", () => {
      sockets.delete(socket);
      http1.delete(socket);
    });
    sniff(socket, secure !== undefined, (kind) => {
      if (kind === "tls") secure?.handshake(socket);
      else if (kind === "plaintext") refusePlaintext(socket);
      else handOver(socket, kind);
    });
  });
  const tcpClosed = new Promise<void>((resolve) => tcp.once("close", () => resolve()));
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
    url: `${secure ? "https" : "http"}://${urlHost}:${address.port}`,
    port: address.port,
    drain: () => {
      draining = true;
      // Responses whose headers are not written yet say `Connection: close` too.
      for (const conn of http1.values()) for (const res of conn.responses) res.shouldKeepAlive = false;
    },
    stopAccepting: async (deadlineMs) => {
      tcp.close();
      const until = Date.now() + deadlineMs;
      for (;;) {
        const now = Date.now();
        for (const [socket, conn] of http1) {
          if (conn.idleSince !== undefined && now - conn.idleSince >= IDLE_LINGER_MS) socket.destroy();
        }
        if (http1.size === 0 || now >= until) return;
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    },
    setCertificate: (pair) => secure?.server.setSecureContext(pair),
    close: () =>
      new Promise<void>((resolve) => {
        // Emitted once the listener is closed (here or by stopAccepting) and every connection is gone.
        void tcpClosed.then(resolve);
        if (tcp.listening) tcp.close();
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
 * The TLS half of a TLS port: accepted sockets are handshaken by a tls.Server (fed with
 * emit("connection"), as the HTTP servers are), and each TLS socket goes where its ALPN says.
 */
function tlsServer(
  pair: CertificatePair,
  handOver: (socket: net.Socket, protocol: "h1" | "h2", served: tls.TLSSocket) => void,
): { server: tls.Server; handshake(socket: net.Socket): void } {
  // The guard's header deadline bounds the handshake (0: no deadline of tls.Server's own).
  const server = tls.createServer({ ...pair, ALPNProtocols: ["h2", "http/1.1"], handshakeTimeout: 0 });
  // The TLS socket does not say which accepted socket it runs on: found by the peer's address and
  // port, unique among open connections to one port.
  const handshaking = new Map<string, net.Socket>();
  const key = (s: net.Socket) => `${s.remoteAddress}|${s.remotePort}`;
  server.on("secureConnection", (secured: tls.TLSSocket) => {
    const socket = handshaking.get(key(secured));
    if (!socket) return void secured.destroy();
    handshaking.delete(key(secured));
    handOver(socket, secured.alpnProtocol === "h2" ? "h2" : "h1", secured);
  });
  // A failed handshake (a client that distrusts the certificate, a port scanner): the socket is
  // closed, which is all there is to do; without a listener tls.Server would do the same.
  server.on("tlsClientError", () => undefined);
  return {
    server,
    handshake: (socket) => {
      const k = key(socket);
      handshaking.set(k, socket);
      socket.once("close", () => {
        if (handshaking.get(k) === socket) handshaking.delete(k);
      });
      server.emit("connection", socket);
    },
  };
}

/** A plaintext client on a TLS port: an HTTP/1.1 one can read a 400 that says so, then it is closed. */
function refusePlaintext(socket: net.Socket): void {
  const error = new ApiError({
    status: 400,
    type: "invalid_request_error",
    code: "tls_required",
    message: "This port serves TLS only: use an https:// URL.",
  });
  const body = JSON.stringify(error.toJSON());
  socket.resume(); // what else it sends is dropped, so closing does not reset the answer away
  socket.end(
    "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: application/json\r\n" +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  setTimeout(() => socket.destroy(), 1_000).unref();
}

/**
 * Reads enough of the first bytes to tell HTTP/2 prior knowledge from HTTP/1.x (on a TLS port: a
 * TLS handshake from plaintext), then puts them back. A connection that says nothing (or dribbles a
 * partial preface) is closed by the guard's header deadline.
 */
function sniff(
  socket: net.Socket,
  tlsPort: boolean,
  decide: (kind: "h1" | "h2" | "tls" | "plaintext") => void,
): void {
  let buffered = Buffer.alloc(0);
  const onReadable = () => {
    let chunk: Buffer | null;
    // biome-ignore lint/suspicious/noAssignInExpressions: the read loop idiom
    while ((chunk = socket.read() as Buffer | null) !== null) buffered = Buffer.concat([buffered, chunk]);
    if (buffered.length === 0) return;
    let kind: "h1" | "h2" | "tls" | "plaintext";
    if (tlsPort) kind = buffered[0] === TLS_HANDSHAKE ? "tls" : "plaintext";
    else {
      const n = Math.min(buffered.length, H2_PREFACE.length);
      const matches = buffered.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (matches && buffered.length < H2_PREFACE.length) return; // need more bytes to decide
      kind = matches ? "h2" : "h1";
    }
    socket.off("readable", onReadable);
    socket.off("end", onEnd);
    if (kind !== "plaintext") socket.unshift(buffered); // a refused plaintext client's bytes are dropped
    decide(kind);
  };
  const onEnd = () => socket.destroy();
  socket.on("readable", onReadable);
  socket.once("end", onEnd);
}
