import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { ProviderService } from "@darkbloom/protocol/provider/v1";

/** One HTTP/2 connection to a coordinator, with a ProviderService client bound to it. */
export interface Dialed {
  readonly client: Client<typeof ProviderService>;
  /** Closes the HTTP/2 connection (and any stream still open on it). */
  close(): void;
  /** Destroys the socket at once, as a network failure would (tests). */
  kill(): void;
}

/** PING an open connection this often; a dead peer is noticed within interval + timeout. */
const PING_INTERVAL_MS = 15_000;
const PING_TIMEOUT_MS = 10_000;

/**
 * Dials the coordinator over HTTP/2 (cleartext with prior knowledge for http:, ALPN h2 for https:)
 * with the Connect protocol. Every dial gets its own connection, so a reconnect never reuses a
 * connection that a restarted coordinator left half-dead.
 */
export function dial(baseUrl: string): Dialed {
  const sockets = new Set<Duplex>();
  const createConnection = (authority: URL): Duplex => {
    const socket = openSocket(authority);
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    return socket;
  };
  const sessionManager = new Http2SessionManager(
    baseUrl,
    { pingIntervalMs: PING_INTERVAL_MS, pingTimeoutMs: PING_TIMEOUT_MS },
    { createConnection },
  );
  const transport = createConnectTransport({ baseUrl, httpVersion: "2", sessionManager });
  return {
    client: createClient(ProviderService, transport),
    close: () => sessionManager.abort(),
    kill: () => {
      for (const socket of sockets) socket.destroy();
      sessionManager.abort();
    },
  };
}

function openSocket(url: URL): Duplex {
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (url.protocol === "https:") {
    const port = Number(url.port || 443);
    return tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, ALPNProtocols: ["h2"] });
  }
  return net.connect({ host, port: Number(url.port || 80), noDelay: true });
}
