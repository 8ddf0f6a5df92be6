import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import { type Client, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  type Http2SessionManager,
  type Http2SessionOptions,
} from "@connectrpc/connect-node";
import { ProviderService } from "../gen/darkbloom/provider/v1/provider_pb.js";
import { GuardedSessionManager } from "./session-manager.js";

/** Which RPC protocol a provider speaks over its HTTP/2 connection (the daemon: Connect). */
export type TransportKind = "connect" | "grpc";

/**
 * PING an open connection after this long without data; a peer that does not answer within the
 * timeout is dead and the connection (and the provider's stream) closes. Without it a coordinator
 * that vanished without a FIN (power loss, a dropped NAT mapping) would leave the provider waiting
 * on a stream that can never deliver, instead of reconnecting: within interval + timeout it knows.
 */
export const KEEPALIVE: Readonly<Required<Pick<Http2SessionOptions, "pingIntervalMs" | "pingTimeoutMs">>> = {
  pingIntervalMs: 15_000,
  pingTimeoutMs: 10_000,
};

/** One HTTP/2 connection to a coordinator (or a stream slot on a shared one), with a client bound to it. */
export interface Dialed {
  readonly client: Client<typeof ProviderService>;
  /**
   * Set when the connection is shared with other providers: the provider's stream must be opened with
   * it, and kill() and close() abort only that stream (RST_STREAM), never the shared connection.
   */
  readonly signal?: AbortSignal;
  /** Closes the HTTP/2 connection (and any stream still open on it). */
  close(): void;
  /** Destroys the socket at once, without GOAWAY or RST_STREAM, as a network failure would (tests). */
  kill(): void;
}

export interface DialOptions {
  /** Default "connect". */
  transport?: TransportKind;
  /** Overrides of KEEPALIVE (tests that watch the pings). */
  keepAlive?: Pick<Http2SessionOptions, "pingIntervalMs" | "pingTimeoutMs">;
  /** https: the certificates trusted instead of Node's CA store (a private CA, a test certificate). */
  ca?: SocketOptions["ca"];
}

/** How openSocket connects. */
export interface SocketOptions {
  ca?: tls.ConnectionOptions["ca"];
}

/**
 * Dials the coordinator over HTTP/2 (cleartext with prior knowledge for http:, ALPN h2 for https:),
 * kept alive with PINGs. Every dial gets its own connection, so a reconnect never reuses a
 * connection that a restarted coordinator left half-dead, and the socket stays reachable for kill().
 */
export function dial(baseUrl: string, options: DialOptions = {}): Dialed {
  const sockets = new Set<Duplex>();
  const createConnection = (authority: URL): Duplex => {
    const socket = openSocket(authority, { ca: options.ca });
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    return socket;
  };
  const sessionManager = new GuardedSessionManager(
    baseUrl,
    { ...KEEPALIVE, ...options.keepAlive },
    { createConnection },
  );
  return {
    client: providerClient(baseUrl, sessionManager, options.transport),
    close: () => sessionManager.abort(),
    kill: () => {
      for (const socket of sockets) socket.destroy();
      sessionManager.abort();
    },
  };
}

/** A ProviderService client over a session manager's connection, speaking Connect or gRPC. */
export function providerClient(
  baseUrl: string,
  sessionManager: Http2SessionManager,
  transport: TransportKind = "connect",
): Client<typeof ProviderService> {
  return createClient(
    ProviderService,
    transport === "grpc"
      ? createGrpcTransport({ baseUrl, sessionManager })
      : createConnectTransport({ baseUrl, httpVersion: "2", sessionManager }),
  );
}

/** The TCP (http:) or TLS with ALPN h2 (https:) socket an HTTP/2 session to `url` runs on. */
export function openSocket(url: URL, options: SocketOptions = {}): Duplex {
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (url.protocol === "https:") {
    const port = Number(url.port || 443);
    const servername = net.isIP(host) ? undefined : host;
    return tls.connect({ host, port, servername, ALPNProtocols: ["h2"], ca: options.ca });
  }
  return net.connect({ host, port: Number(url.port || 80), noDelay: true });
}
