import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Dialed,
  GuardedSessionManager,
  KEEPALIVE,
  openSocket,
  providerClient,
  type TransportKind,
} from "@darkbloom/protocol/provider-client";

/**
 * One HTTP/2 connection (opened on first use, reopened after it drops) that many providers' streams
 * share, so that thousands of simulated providers need a handful of sockets instead of one each. A
 * provider on it (ScriptedProviderOptions.connection) that is killed or closed resets only its own
 * stream: it cannot simulate a dropped socket, which per-provider connections do. The connection is
 * kept alive with the daemon's PINGs, like every provider's.
 */
export class SharedConnection {
  private readonly sessionManager: GuardedSessionManager;
  private readonly client: Dialed["client"];

  constructor(
    readonly baseUrl: string,
    options: {
      kind?: TransportKind;
      /** The session's maxSessionMemory in MB (Node's default of 10 is too little for ~1,000 streams). */
      maxSessionMemoryMb?: number;
    } = {},
  ) {
    this.sessionManager = new GuardedSessionManager(baseUrl, KEEPALIVE, {
      createConnection: (url: URL) => openSocket(url),
      maxSessionMemory: options.maxSessionMemoryMb ?? 256,
    });
    this.client = providerClient(baseUrl, this.sessionManager, options.kind);
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
