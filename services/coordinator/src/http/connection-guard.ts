import type { IncomingMessage, ServerResponse } from "node:http";
import http2 from "node:http2";
import type net from "node:net";
import { CONNECTION_LIMIT_DEFAULTS, type CoordinatorConfig } from "../config.js";
import { ApiError } from "../errors/index.js";
import { addressKey } from "./client-address.js";
import { sendError } from "./respond.js";
import type { HttpRequest, HttpResponse } from "./types.js";

/** The deadlines and caps of the one-port server (serve flags; see CoordinatorConfig). */
export type ConnectionLimits = Pick<
  CoordinatorConfig,
  | "headerTimeoutMs"
  | "bodyTimeoutMs"
  | "idleTimeoutMs"
  | "maxConnections"
  | "maxConnectionsPerAddress"
  | "maxStreamsPerConnection"
>;

export function connectionLimits(given: Partial<ConnectionLimits> = {}): ConnectionLimits {
  const d = CONNECTION_LIMIT_DEFAULTS;
  return {
    headerTimeoutMs: given.headerTimeoutMs ?? d.headerTimeoutMs,
    bodyTimeoutMs: given.bodyTimeoutMs ?? d.bodyTimeoutMs,
    idleTimeoutMs: given.idleTimeoutMs ?? d.idleTimeoutMs,
    maxConnections: given.maxConnections ?? d.maxConnections,
    maxConnectionsPerAddress: given.maxConnectionsPerAddress ?? d.maxConnectionsPerAddress,
    maxStreamsPerConnection: given.maxStreamsPerConnection ?? d.maxStreamsPerConnection,
  };
}

/** Which limit refused a connection or cut a request or response (a bounded set: a metric label). */
export type LimitName =
  | "connections_total"
  | "connections_per_address"
  | "header_timeout"
  | "body_timeout"
  | "send_timeout"
  | "response_buffer"
  | "response_bytes";

/** How long a connection cut after a 408 is kept so the client can read the answer. */
const LINGER_MS = 1_000;

/** Requests whose body deadline passed: what was read of them is not their whole body. */
const cutRequests = new WeakSet<HttpRequest>();

/** Whether the body deadline cut this request (its body is incomplete, whatever its stream says). */
export function isCut(req: HttpRequest): boolean {
  return cutRequests.has(req);
}

/** A TCP connection while it is open: its client address and its current deadline. */
interface Connection {
  address: string;
  /** What HTTP is read from and written to: the accepted socket, or the TLS socket over it. */
  socket: net.Socket;
  /** Set once the sniff (or the TLS handshake's ALPN) has handed the socket to HTTP/1.1 or HTTP/2. */
  protocol: "h1" | "h2" | undefined;
  timer: NodeJS.Timeout | undefined;
  /** HTTP/1.1: the request whose deadlines run now (pipelined ones follow it). */
  current: HttpRequest | undefined;
}

/**
 * The one-port server's defences against slow and numerous clients. Node's HTTP servers only time
 * out headers and bodies for connections they accepted themselves (their checker never sees sockets
 * handed over with `emit("connection")`), so the deadlines are kept here:
 *
 * - from the accept, the protocol sniff and the first request's headers: `headerTimeoutMs`; a
 *   kept-alive HTTP/1.1 connection gets `idleTimeoutMs + headerTimeoutMs` for its next request's
 *   headers (Node closes it sooner when no byte at all arrives; its first byte cannot be seen here);
 * - from a request's headers, its body (an HTTP/2 stream's END_STREAM): `bodyTimeoutMs`, after which
 *   it is answered 408 (or cut, when its response already began). Request-streaming RPCs (the
 *   provider stream, whose liveness is its heartbeats) are exempt while their response is open, and
 *   get the body deadline once it has ended;
 * - connections per client address and in total are capped at the accept: one more is closed at once,
 *   before any byte is read, while the open ones carry on.
 *
 * HTTP/2 sessions idle with no stream are closed by the server (`idleTimeoutMs`), and a partial header
 * block holds no stream, so it is bounded by that too.
 */
export class ConnectionGuard {
  private readonly perAddress = new Map<string, number>();
  private readonly connections = new WeakMap<net.Socket, Connection>();

  constructor(
    readonly limits: ConnectionLimits,
    private readonly isRequestStream: (req: HttpRequest) => boolean,
    private readonly onLimit: (limit: LimitName) => void,
  ) {}

  /** A connection was accepted: false (and the socket closed) when its address is at its cap. */
  admit(socket: net.Socket): boolean {
    const address = socket.remoteAddress ? addressKey(socket.remoteAddress) : undefined;
    if (address === undefined) {
      socket.destroy(); // already gone
      return false;
    }
    const open = this.perAddress.get(address) ?? 0;
    const cap = this.limits.maxConnectionsPerAddress;
    if (cap > 0 && open >= cap) {
      socket.destroy();
      this.onLimit("connections_per_address");
      return false;
    }
    this.perAddress.set(address, open + 1);
    const conn: Connection = { address, socket, protocol: undefined, timer: undefined, current: undefined };
    this.connections.set(socket, conn);
    socket.once("close", () => {
      clearTimeout(conn.timer);
      const left = (this.perAddress.get(address) ?? 1) - 1;
      if (left > 0) this.perAddress.set(address, left);
      else this.perAddress.delete(address);
    });
    this.arm(conn, this.limits.headerTimeoutMs, () => this.headersExpired(conn));
    return true;
  }

  /** Connections open from an address (IPv6: its /64). */
  openFrom(address: string): number {
    return this.perAddress.get(addressKey(address)) ?? 0;
  }

  /**
   * The sniff (or the TLS handshake) chose a protocol; `served` is the socket HTTP runs on (the TLS
   * socket over the accepted one), whose deadlines go on from the accept's: a handshake counts
   * against the header deadline. HTTP/2 sessions are bounded by their idle timer and stream deadlines.
   */
  handedOver(socket: net.Socket, protocol: "h1" | "h2", served: net.Socket = socket): void {
    const conn = this.connections.get(socket);
    if (!conn) return;
    conn.protocol = protocol;
    conn.socket = served;
    this.connections.set(served, conn);
    if (protocol === "h2") clearTimeout(conn.timer);
  }

  /** A request's headers are complete (an HTTP/1.1 request or an HTTP/2 stream): its body deadline starts. */
  request(req: HttpRequest, res: HttpResponse): void {
    if ("stream" in req) this.http2Request(req.stream, req, res);
    else this.http1Request(req, res as unknown as ServerResponse);
  }

  private http1Request(req: IncomingMessage, res: ServerResponse): void {
    const conn = this.connections.get(req.socket);
    if (!conn) return;
    conn.current = req;
    clearTimeout(conn.timer);
    const streaming = this.isRequestStream(req);
    const bodyDeadline = () => {
      if (conn.current !== req) return;
      if (!req.complete) return this.bodyExpired(req, res as unknown as HttpResponse);
      // The body made it; once the response is done too, the connection waits for the next request.
      if (res.writableFinished) this.awaitNextRequest(conn);
    };
    if (!streaming) this.arm(conn, this.limits.bodyTimeoutMs, bodyDeadline);
    res.once("finish", () => {
      if (conn.current !== req) return;
      if (req.complete) this.awaitNextRequest(conn);
      else if (streaming) this.arm(conn, this.limits.bodyTimeoutMs, bodyDeadline);
      // else the body deadline armed at the headers still runs
    });
  }

  private http2Request(stream: http2.ServerHttp2Stream, req: HttpRequest, res: HttpResponse): void {
    if (stream.endAfterHeaders) return; // no body to wait for
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      timer = setTimeout(() => {
        if (!streamBodyComplete(stream)) this.bodyExpired(req, res);
      }, this.limits.bodyTimeoutMs);
      timer.unref();
    };
    if (!this.isRequestStream(req)) arm();
    else res.once("finish", arm);
    stream.once("close", () => clearTimeout(timer));
  }

  private awaitNextRequest(conn: Connection): void {
    conn.current = undefined;
    this.arm(conn, this.limits.idleTimeoutMs + this.limits.headerTimeoutMs, () => this.headersExpired(conn));
  }

  private arm(conn: Connection, ms: number, expire: () => void): void {
    clearTimeout(conn.timer);
    conn.timer = setTimeout(expire, ms);
    conn.timer.unref();
  }

  /** No complete request headers in time: a 408 as Node's own checker writes it, then the socket goes. */
  private headersExpired(conn: Connection): void {
    const socket = conn.socket;
    if (socket.destroyed || conn.current !== undefined) return;
    this.onLimit("header_timeout");
    if (conn.protocol !== "h1") {
      socket.destroy(); // it never said which protocol it speaks (nor finished a TLS handshake)
      return;
    }
    const body = JSON.stringify(requestTimeout("headers", this.limits.headerTimeoutMs).toJSON());
    socket.end(
      "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n" +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    setTimeout(() => socket.destroy(), LINGER_MS).unref();
  }

  /**
   * The body did not arrive in time: 408 in OpenAI's shape while the response has not begun, then the
   * connection (HTTP/1.1) or the stream (HTTP/2) is closed, since the rest of the body may still come.
   * The handler waiting for the body sees it aborted and has nothing left to write.
   */
  private bodyExpired(req: HttpRequest, res: HttpResponse): void {
    this.onLimit("body_timeout");
    cutRequests.add(req);
    const answered = !res.headersSent && !res.writableEnded;
    if (answered) {
      sendError(
        res,
        requestTimeout("body", this.limits.bodyTimeoutMs),
        "stream" in req ? {} : { Connection: "close" },
      );
    }
    if ("stream" in req) {
      const stream = req.stream;
      // Outside the frame callbacks: resetting a stream reentrantly from inside them is unsafe.
      const close = (code: number) =>
        setImmediate(() => {
          if (!stream.closed) stream.close(code);
        });
      if (answered || res.writableFinished) {
        if (stream.writableFinished) close(http2.constants.NGHTTP2_NO_ERROR);
        else stream.once("finish", () => close(http2.constants.NGHTTP2_NO_ERROR));
        setTimeout(() => close(http2.constants.NGHTTP2_CANCEL), LINGER_MS).unref();
      } else {
        close(http2.constants.NGHTTP2_CANCEL);
      }
      return;
    }
    const socket = req.socket;
    if (answered) setTimeout(() => socket.destroy(), LINGER_MS).unref();
    else socket.destroy();
  }
}

/** Whether an HTTP/2 stream's request body is over (END_STREAM received) or the stream is gone. */
function streamBodyComplete(stream: http2.ServerHttp2Stream): boolean {
  if (stream.destroyed || stream.closed || stream.readableEnded) return true;
  return stream.state.remoteClose === 1;
}

function requestTimeout(part: "headers" | "body", ms: number): ApiError {
  return new ApiError({
    status: 408,
    type: "invalid_request_error",
    code: "request_timeout",
    message: `The request ${part} did not arrive within ${ms} ms; the connection was closed.`,
  });
}
