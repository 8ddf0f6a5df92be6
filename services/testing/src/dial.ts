import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { ProviderService } from "@darkbloom/protocol/provider/v1";

/** Which RPC protocol the provider speaks over its HTTP/2 connection. */
export type TransportKind = "connect" | "grpc";

/** One HTTP/2 connection to a coordinator, with a ProviderService client bound to it. */
export interface Dialed {
  readonly client: Client<typeof ProviderService>;
  /**
   * Set when the connection is shared with other providers: the provider's stream must be opened with
   * it, and kill() and close() abort only that stream (RST_STREAM), never the shared connection.
   */
  readonly signal?: AbortSignal;
  /** Destroys the TCP socket at once, without GOAWAY or RST_STREAM: what a killed process leaves behind. */
  kill(): void;
  /** Closes the HTTP/2 connection (and any stream still open on it). */
  close(): void;
}

/**
 * Dials baseUrl over HTTP/2 (cleartext with prior knowledge for http:, ALPN h2 for https:). The
 * connection gets its own session manager, so every provider holds its own socket, as separate daemon
 * processes would, and its socket stays reachable for kill().
 */
export function dial(baseUrl: string, kind: TransportKind): Dialed {
  const sockets = new Set<Duplex>();
  const createConnection = (authority: URL): Duplex => {
    const socket = openSocket(authority);
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    return socket;
  };
  const sessionManager = new Http2SessionManager(baseUrl, {}, { createConnection });
  const transport =
    kind === "grpc"
      ? createGrpcTransport({ baseUrl, sessionManager })
      : createConnectTransport({ baseUrl, httpVersion: "2", sessionManager });
  return {
    client: createClient(ProviderService, transport),
    kill: () => {
      for (const socket of sockets) socket.destroy();
      sessionManager.abort();
    },
    close: () => sessionManager.abort(),
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

/**
 * One HTTP/2 connection (opened on first use, reopened after it drops) that many providers' streams
 * share, so that thousands of simulated providers need a handful of sockets instead of one each. A
 * provider on it (ScriptedProviderOptions.connection) that is killed or closed resets only its own
 * stream: it cannot simulate a dropped socket, which per-provider connections do.
 */
export class SharedConnection {
  private readonly sessionManager: Http2SessionManager;
  private readonly client: Client<typeof ProviderService>;

  constructor(
    readonly baseUrl: string,
    options: {
      kind?: TransportKind;
      /** The session's maxSessionMemory in MB (Node's default of 10 is too little for ~1,000 streams). */
      maxSessionMemoryMb?: number;
    } = {},
  ) {
    this.sessionManager = new Http2SessionManager(
      baseUrl,
      {},
      { createConnection: openSocket, maxSessionMemory: options.maxSessionMemoryMb ?? 256 },
    );
    const transport =
      options.kind === "grpc"
        ? createGrpcTransport({ baseUrl, sessionManager: this.sessionManager })
        : createConnectTransport({ baseUrl, httpVersion: "2", sessionManager: this.sessionManager });
    this.client = createClient(ProviderService, transport);
  }

  /** A stream slot on this connection for one provider session. */
  dial(): Dialed {
    const controller = new AbortController();
    const abort = () => controller.abort(new ConnectError("stream closed by the provider", Code.Canceled));
    return { client: this.client, signal: controller.signal, kill: abort, close: abort };
  }

  /** Closes the connection and every stream still open on it. */
  close(): void {
    this.sessionManager.abort();
  }
}
