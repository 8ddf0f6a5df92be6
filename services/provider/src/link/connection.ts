import { Code, ConnectError } from "@connectrpc/connect";
import { type BackoffPolicy, backoffDelay, backoffPolicy } from "@darkbloom/protocol";
import type { ConnectResponse, RegisterAck } from "@darkbloom/protocol/provider/v1";
import { dial, type RegisterInit, registerMessage } from "@darkbloom/protocol/provider-client";
import type { Logger } from "pino";
import type { DisconnectReason, LinkDisconnect } from "./options.js";
import { Session } from "./session.js";

/** Codes with which a coordinator refuses a Register; retrying the same Register cannot succeed. */
const REFUSALS: ReadonlySet<Code> = new Set([
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.InvalidArgument,
  Code.FailedPrecondition,
]);

/** What the connection asks of the rest of the link. */
export interface ConnectionHooks {
  /** The Register sent first on every stream. */
  registration(): RegisterInit;
  /** Each message from the coordinator, in order. */
  dispatch(session: Session, response: ConnectResponse): void;
  /** The coordinator acknowledged the Register. */
  registered(session: Session, ack: RegisterAck): void;
  /** The stream ended: nothing more may be sent for what was in flight on it. */
  ended(session: Session): void;
  disconnected(disconnect: LinkDisconnect): void;
}

export interface ConnectionOptions {
  /** The coordinator's base URL, e.g. http://127.0.0.1:8080. */
  coordinatorUrl: string;
  /** Overrides of the reconnect policy (1 s doubling to 30 s, ±20%). */
  backoff?: Partial<BackoffPolicy> | undefined;
  /** Jitter source (tests). */
  random?: (() => number) | undefined;
}

/**
 * The link's connection to the coordinator: one ProviderService.Connect stream at a time, each on a
 * connection of its own, re-dialed with backoff and jitter whenever it ends, until the link stops or
 * the coordinator refuses the Register itself (a bad token or version: retrying cannot help).
 */
export class Connection {
  /** stop(), close() or a refused Register: no more reconnects, new requests refused. */
  stopping = false;
  private session: Session | undefined;
  private lastAck: RegisterAck | undefined;
  private started = false;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private readonly backoff: BackoffPolicy;

  constructor(
    private readonly options: ConnectionOptions,
    private readonly log: Logger,
    private readonly hooks: ConnectionHooks,
  ) {
    this.backoff = backoffPolicy(options.backoff);
  }

  /** The open stream's session (registered or not); undefined between streams. */
  get current(): Session | undefined {
    return this.session;
  }

  /** The id of the current (or last) registration. */
  get providerId(): string | undefined {
    return this.lastAck?.providerId;
  }

  /** Dials and keeps dialing until stopped. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.open();
  }

  /** No reconnect after the current stream ends. */
  stopReconnecting(): void {
    this.stopping = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
  }

  /** The coordinator acknowledged the Register: the backoff starts over. */
  acknowledge(session: Session, ack: RegisterAck): void {
    session.ack = ack;
    this.lastAck = ack;
    this.attempt = 0;
    this.log.info(
      {
        providerId: ack.providerId,
        trustLevel: ack.trustLevel,
        heartbeatIntervalMs: ack.heartbeatIntervalMs,
      },
      "registered with the coordinator",
    );
    this.hooks.registered(session, ack);
  }

  /**
   * Ends a session (once): its work is abandoned, its connection closed, and unless the link is
   * stopping the next dial is scheduled. `forced` names the reason when the link ended it.
   */
  end(session: Session, error: unknown, forced?: DisconnectReason): void {
    if (session.ended) return;
    session.ended = true;
    session.stopHeartbeats();
    clearTimeout(session.drainTimer);
    // The coordinator fails or retries what was in flight; free the engine at once.
    this.hooks.ended(session);
    session.wakeIdleWaiters();
    session.outbound.close();
    session.dialed.close();
    if (this.session === session) this.session = undefined;

    const refused = !session.ack && error instanceof ConnectError && REFUSALS.has(error.code);
    if (refused) this.stopping = true;
    const reason: DisconnectReason =
      forced ??
      (refused
        ? "rejected"
        : this.stopping
          ? "stopped"
          : session.drainedByCoordinator
            ? "drained"
            : error === undefined
              ? "closed_by_coordinator"
              : "error");
    let reconnectInMs: number | undefined;
    if (!this.stopping) {
      reconnectInMs = backoffDelay(this.backoff, this.attempt++, this.options.random);
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = undefined;
        if (!this.stopping && !this.session) this.open();
      }, reconnectInMs);
    }
    const providerId = session.ack?.providerId;
    this.logEnd(reason, session, { providerId, reason, reconnectInMs, err: describe(error) });
    const disconnect: LinkDisconnect = { reason, providerId, reconnectInMs };
    if (error !== undefined) disconnect.error = error;
    this.hooks.disconnected(disconnect);
  }

  private open(): void {
    const session = new Session(dial(this.options.coordinatorUrl));
    this.session = session;
    session.outbound.send(registerMessage(this.hooks.registration()));
    session.done = this.pump(session);
  }

  private async pump(session: Session): Promise<void> {
    let error: unknown;
    try {
      for await (const message of session.dialed.client.connect(session.outbound.messages())) {
        this.hooks.dispatch(session, message);
      }
    } catch (e) {
      error = e;
    }
    this.end(session, error);
  }

  private logEnd(reason: DisconnectReason, session: Session, fields: Record<string, unknown>): void {
    if (reason === "rejected")
      this.log.error(fields, "the coordinator refused the registration; not retrying");
    else if (reason === "error" && !session.ack)
      this.log.warn(fields, "could not register with the coordinator");
    else if (reason === "error") this.log.warn(fields, "coordinator stream failed");
    else this.log.info(fields, "coordinator stream ended");
  }
}

function describe(error: unknown): string | undefined {
  if (error === undefined) return undefined;
  return error instanceof ConnectError ? error.rawMessage : String(error);
}
