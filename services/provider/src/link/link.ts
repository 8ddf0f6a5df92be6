import { EventEmitter } from "node:events";
import type { ConnectResponse, RegisterAck } from "@darkbloom/protocol/provider/v1";
import type { Logger } from "pino";
import type { Engine, ModelFile } from "../engine/engine.js";
import { answerChallenge } from "./challenge.js";
import { Connection } from "./connection.js";
import { Draining } from "./drain.js";
import { Heartbeats } from "./heartbeats.js";
import { ModelOperations } from "./model-operations.js";
import type { LinkCounters, ProviderLinkEvents, ProviderLinkOptions } from "./options.js";
import { registration } from "./registration.js";
import { RequestServer } from "./request-server.js";
import type { Session } from "./session.js";

export type {
  DisconnectReason,
  LinkAttestor,
  LinkCounters,
  LinkDisconnect,
  LinkObserver,
  ProviderLinkEvents,
  ProviderLinkOptions,
  RequestOutcome,
  ResponseSigner,
  ServingKnobs,
} from "./options.js";
export { REQUEST_OUTCOMES } from "./options.js";

/**
 * The daemon's link to the coordinator: one ProviderService.Connect stream at a time, re-dialed with
 * backoff and jitter whenever it ends. It registers, heartbeats with the engine's live stats, turns
 * each InferenceRequest into one engine generation per choice and streams the tokens back, and
 * follows Cancel, LoadModel/UnloadModel and Drain.
 *
 * Each concern lives in a part of its own (connection.ts, request-server.ts, heartbeats.ts,
 * model-operations.ts, drain.ts, challenge.ts); this class wires them together, hands each message
 * from the coordinator to its owner and is the daemon's one handle on the link.
 */
export class ProviderLink extends EventEmitter<ProviderLinkEvents> {
  readonly counters: LinkCounters = {
    requestsCompleted: 0,
    requestsFailed: 0,
    requestsCancelled: 0,
    registrations: 0,
    heartbeatsSent: 0,
  };

  private readonly options: ProviderLinkOptions;
  private readonly engine: Engine;
  private readonly log: Logger;
  private readonly served: Map<string, ModelFile>;
  private readonly connection: Connection;
  private readonly heartbeats: Heartbeats;
  private readonly models: ModelOperations;
  private readonly requests: RequestServer;
  private readonly draining: Draining;

  constructor(options: ProviderLinkOptions) {
    super();
    this.options = options;
    this.engine = options.engine;
    this.log = options.logger;
    this.served = new Map(options.models.map((m) => [m.id, m]));
    const stopping = () => this.connection.stopping;
    this.heartbeats = new Heartbeats(this.engine, this.counters, this.log, {
      intervalMs: options.heartbeatIntervalMs,
      warmWindowMs: options.warmWindowMs,
      stopping,
      onSent: (heartbeat) => this.emit("heartbeat", heartbeat),
    });
    this.models = new ModelOperations(this.engine, this.served, this.log, (session) =>
      this.heartbeats.send(session),
    );
    this.requests = new RequestServer({
      engine: this.engine,
      served: this.served,
      encryptionKey: options.encryptionKey,
      responseSigner: options.responseSigner,
      counters: this.counters,
      observer: options.observer,
      log: this.log,
      models: this.models,
      heartbeats: this.heartbeats,
      stopping,
      onIdle: (session) => this.draining.onIdle(session),
    });
    this.draining = new Draining(this.requests, this.heartbeats, this.log);
    this.connection = new Connection(
      { coordinatorUrl: options.coordinatorUrl, backoff: options.backoff, random: options.random },
      this.log,
      {
        registration: () => registration(options),
        dispatch: (session, response) => this.dispatch(session, response),
        registered: (session, ack) => {
          this.counters.registrations++;
          this.heartbeats.start(session, ack);
          this.emit("registered", ack);
        },
        ended: (session) => this.requests.abandon(session),
        disconnected: (disconnect) => this.emit("disconnected", disconnect),
      },
    );
  }

  /** The id of the current (or last) registration. */
  get providerId(): string | undefined {
    return this.connection.providerId;
  }

  /** Whether a registered stream is open now. */
  get connected(): boolean {
    return this.connection.current?.registered ?? false;
  }

  /** Requests being served now. */
  get inFlight(): number {
    return this.connection.current?.active.size ?? 0;
  }

  /** Dials and keeps dialing until stop() or close(). */
  start(): void {
    this.connection.start();
  }

  /** Resolves with the RegisterAck of the open stream, or of the next registration. */
  waitForRegistration(timeoutMs = 30_000): Promise<RegisterAck> {
    const current = this.connection.current;
    if (current?.ack && !current.ended) return Promise.resolve(current.ack);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off("registered", onAck);
        reject(new Error(`not registered with ${this.options.coordinatorUrl} within ${timeoutMs} ms`));
      }, timeoutMs);
      const onAck = (ack: RegisterAck) => {
        clearTimeout(timer);
        resolve(ack);
      };
      this.once("registered", onAck);
    });
  }

  /**
   * Graceful stop (SIGTERM): refuses new requests (503, retryable), tells the coordinator it is
   * draining, lets in-flight requests finish for up to `deadlineMs`, fails the rest, ends the stream
   * and does not reconnect.
   */
  async stop(deadlineMs = 30_000): Promise<void> {
    this.connection.stopReconnecting();
    const session = this.connection.current;
    if (!session || session.ended) return;
    await this.draining.stop(session, deadlineMs);
  }

  /** Immediate stop: cancels in-flight work and drops the connection. */
  async close(): Promise<void> {
    this.connection.stopReconnecting();
    const session = this.connection.current;
    if (!session) return;
    this.connection.end(session, undefined, "stopped");
    await session.done;
  }

  /** Drops the connection as a network failure would (tests); the link reconnects. */
  killConnection(): void {
    this.connection.current?.dialed.kill();
  }

  /** Hands each message from the coordinator to its owner; nothing is handled once the stream ended. */
  private dispatch(session: Session, response: ConnectResponse): void {
    if (session.ended) return;
    const { message } = response;
    switch (message.case) {
      case "registerAck":
        this.connection.acknowledge(session, message.value);
        return;
      case "inferenceRequest":
        this.emit("request", message.value);
        this.requests.onRequest(session, message.value);
        return;
      case "cancel":
        this.emit("cancel", message.value);
        this.requests.onCancel(session, message.value);
        return;
      case "loadModel":
        void this.models.run(session, "load", message.value.operationId, message.value.modelId);
        return;
      case "unloadModel":
        void this.models.run(session, "unload", message.value.operationId, message.value.modelId);
        return;
      case "drain":
        this.emit("drain", message.value);
        this.draining.onDrain(session, message.value);
        return;
      case "runtimeStatus": {
        const { trustLevel, routable, reasons } = message.value;
        const codes = reasons.map((r) => r.code);
        this.log.info({ trustLevel, routable, reasons: codes }, "runtime status from the coordinator");
        this.emit("runtimeStatus", message.value);
        return;
      }
      case "attestationChallenge":
        void answerChallenge(
          session,
          message.value,
          this.options.attestor,
          this.engine,
          this.served,
          this.log,
        );
        return;
      case undefined:
        return;
    }
  }
}
