import { createHash, createPublicKey, randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import * as os from "node:os";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type BackoffPolicy,
  backoffDelay,
  backoffPolicy,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  PROTOCOL_VERSION,
  USAGE_VERSION,
} from "@darkbloom/protocol";
import {
  AcceleratorKind,
  type AttestationChallenge,
  type ConnectResponse,
  type Drain,
  LoadModelState,
  MemoryPressure,
  ProviderState,
  type RegisterAck,
  type RuntimeStatus,
  type SignedAttestationSchema,
  SignerKind,
  ThermalState,
} from "@darkbloom/protocol/provider/v1";
import {
  attestationResponseMessage,
  dial,
  heartbeatMessage,
  loadStatusMessage,
  type RegisterInit,
  registerMessage,
} from "@darkbloom/protocol/provider-client";
import { BoxKeyPair } from "@darkbloom/protocol/sealed-box";
import { RESPONSE_SIGNATURE_VERSION } from "@darkbloom/protocol/verifiable-response";
import type { ReceivedRequest } from "./script.js";
import type {
  Disconnect,
  LoadModelCommand,
  ScriptedProviderEvents,
  ScriptedProviderOptions,
} from "./scripted-options.js";
import { type RequestLog, ScriptedRequests } from "./scripted-requests.js";
import { type Deferred, deferred, Session } from "./scripted-session.js";

/** Time stop() gives the coordinator to end the response after the provider ended its requests. */
const STOP_GRACE_MS = 2_000;
const DEFAULT_CONTEXT = 8_192;
const DAEMON_VERSION = "0.0.0-test";
const EMPTY = new Uint8Array();

/**
 * A provider that speaks the real protocol over a real HTTP/2 stream and answers requests from a
 * script instead of an engine. Coordinator tests drive it; the benchmark runs many of them. What it
 * sends is built by the daemon's own wire code (@darkbloom/protocol/provider-client); this class owns
 * the session lifecycle (register, heartbeats, drain, reconnect, kill) and the control messages, and
 * ScriptedRequests plays each request's script.
 */
export class ScriptedProvider extends EventEmitter<ScriptedProviderEvents> implements RequestLog {
  readonly machineId: string;
  readonly received: ReceivedRequest[] = [];
  readonly completed: string[] = [];
  readonly failed: string[] = [];
  readonly cancelled: string[] = [];
  readonly drains: Drain[] = [];
  readonly challenges: AttestationChallenge[] = [];
  readonly runtimeStatuses: RuntimeStatus[] = [];
  readonly loadModels: LoadModelCommand[] = [];
  /** What its heartbeats report (tests set it: a machine short of memory). */
  memoryPressure: MemoryPressure = MemoryPressure.NORMAL;
  requestsCompleted = 0;
  requestsFailed = 0;
  tokensGenerated = 0;
  heartbeatsSent = 0;

  private readonly options: ScriptedProviderOptions;
  private readonly maxBatch: number;
  private readonly maxContext: number;
  private readonly served: Set<string>;
  private readonly loaded: Set<string>;
  private readonly warm = new Set<string>();
  private readonly requests: ScriptedRequests;
  private readonly backoff: BackoffPolicy;
  private readonly encryptionKey: BoxKeyPair | undefined;
  /** Register.attestation from the attestor, made at the first start. */
  private attestation: MessageInitShape<typeof SignedAttestationSchema> | undefined;
  private readonly signingPublicKey: Uint8Array | undefined;
  private session: Session | undefined;
  private lastAck: RegisterAck | undefined;
  private heartbeating: boolean;
  private closed = false;
  private registrations = 0;
  private reconnectsAwaited = 0;
  private reconnectAttempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectWaiters: Deferred<RegisterAck>[] = [];

  constructor(options: ScriptedProviderOptions) {
    super();
    this.options = options;
    this.machineId = options.machineId ?? `scripted-${randomUUID()}`;
    this.maxBatch = options.maxBatch ?? 4;
    this.maxContext =
      options.maxContext ??
      (Math.max(0, ...options.models.map((m) => m.contextLength ?? 0)) || DEFAULT_CONTEXT);
    this.served = new Set(options.models.map((m) => m.id));
    this.loaded = new Set(this.served);
    this.backoff = backoffPolicy(options.reconnectBackoff);
    this.heartbeating = options.sendHeartbeats ?? true;
    this.encryptionKey = options.encryption === false ? undefined : BoxKeyPair.generate();
    if (options.responseSigningKey) {
      const der = createPublicKey(options.responseSigningKey).export({ format: "der", type: "spki" });
      this.signingPublicKey = new Uint8Array(der.subarray(der.length - 65));
    }
    this.requests = new ScriptedRequests(
      options,
      this.maxBatch,
      this.encryptionKey,
      { served: this.served, loaded: this.loaded, warm: this.warm },
      this,
      (received) => this.emit("request", received),
    );
  }

  /** The X25519 public key requests are sealed to (undefined with encryption off). */
  get encryptionPublicKey(): Uint8Array | undefined {
    return this.encryptionKey?.publicKey;
  }

  /** The id the coordinator assigned in the latest RegisterAck. */
  get providerId(): string | undefined {
    return this.lastAck?.providerId;
  }

  /** Whether a registered session is open now. */
  get connected(): boolean {
    return this.session?.ack !== undefined;
  }

  /** Requests holding a batch slot now. */
  get inFlight(): number {
    return this.session?.active.size ?? 0;
  }

  /** Ids of the requests holding a batch slot now. */
  inFlightRequestIds(): string[] {
    return [...(this.session?.active.keys() ?? [])];
  }

  /** Connects and registers; resolves on the RegisterAck, rejects if the stream ends or fails first. */
  start(): Promise<RegisterAck> {
    if (this.closed) return Promise.reject(new Error("scripted provider was stopped"));
    if (this.session) return Promise.reject(new Error("scripted provider already started"));
    const attestor = this.options.attestor;
    if (!attestor || this.attestation) return this.open();
    return attestor
      .attestation({
        machineId: this.machineId,
        daemonVersion: this.options.daemonVersion ?? DAEMON_VERSION,
        encryptionPublicKey: this.encryptionKey?.publicKey ?? EMPTY,
      })
      .then((attestation) => {
        this.attestation = attestation;
        return this.open();
      });
  }

  /** Graceful shutdown: cancels local work, ends the request stream and waits for the stream to end. */
  async stop(): Promise<void> {
    this.shutDown();
    const session = this.session;
    if (!session) return;
    session.ending ??= "stopped";
    session.quiesce();
    session.outbound.close();
    const deadline = setTimeout(() => session.dialed.close(), STOP_GRACE_MS);
    await session.done;
    clearTimeout(deadline);
  }

  /** Abrupt death, like SIGKILL: the socket is destroyed now, nothing more is sent, no reconnect. */
  kill(): void {
    this.shutDown();
    const session = this.session;
    if (!session) return;
    session.ending ??= "killed";
    session.quiesce();
    session.dialed.kill();
  }

  /**
   * Resolves on the next re-registration after a disconnect, or at once when the provider has
   * re-registered since the last call and is connected. Rejects when reconnect is off or the provider
   * is stopped or killed first.
   */
  waitForReconnect(): Promise<RegisterAck> {
    const ack = this.session?.ack;
    if (ack && this.registrations - 1 > this.reconnectsAwaited) {
      this.reconnectsAwaited = this.registrations - 1;
      return Promise.resolve(ack);
    }
    if (!this.options.reconnect) return Promise.reject(new Error("reconnect is disabled for this provider"));
    if (this.closed) return Promise.reject(new Error("scripted provider was stopped"));
    const waiter = deferred<RegisterAck>();
    this.reconnectWaiters.push(waiter);
    return waiter.promise;
  }

  /** Starts or stops heartbeats on the open session (and on later ones). */
  setHeartbeating(enabled: boolean): void {
    this.heartbeating = enabled;
    const session = this.session;
    if (!session?.ack) return;
    if (enabled) this.startHeartbeats(session, session.ack);
    else session.stopHeartbeats();
  }

  private open(): Promise<RegisterAck> {
    const session = new Session(
      this.options.connection?.dial() ??
        dial(this.options.baseUrl, { transport: this.options.transport ?? "connect", ca: this.options.ca }),
    );
    this.session = session;
    session.send(registerMessage(this.registration()));
    session.done = this.pump(session);
    return session.registered.promise;
  }

  private async pump(session: Session): Promise<void> {
    let error: unknown;
    try {
      const signal = session.dialed.signal;
      const stream = session.dialed.client.connect(session.outbound.messages(), signal ? { signal } : {});
      for await (const message of stream) {
        this.dispatch(session, message);
      }
    } catch (e) {
      error = e;
    }
    this.endSession(session, error);
  }

  /** Hands each message from the coordinator to its owner; every message is also emitted as "wire". */
  private dispatch(session: Session, response: ConnectResponse): void {
    this.emit("wire", response);
    const { message } = response;
    switch (message.case) {
      case "registerAck":
        this.onRegisterAck(session, message.value);
        break;
      case "inferenceRequest":
        this.requests.onRequest(session, message.value);
        break;
      case "cancel":
        this.requests.onCancel(session, message.value);
        this.emit("cancel", message.value);
        break;
      case "attestationChallenge":
        this.onChallenge(session, message.value);
        break;
      case "loadModel":
        this.onLoadModel(session, "load", message.value.operationId, message.value.modelId);
        break;
      case "unloadModel":
        this.onLoadModel(session, "unload", message.value.operationId, message.value.modelId);
        break;
      case "runtimeStatus":
        this.runtimeStatuses.push(message.value);
        break;
      case "drain":
        this.onDrain(session, message.value);
        break;
      case undefined:
        break;
    }
  }

  private onRegisterAck(session: Session, ack: RegisterAck): void {
    session.ack = ack;
    this.lastAck = ack;
    this.registrations++;
    this.reconnectAttempt = 0;
    if (this.heartbeating) this.startHeartbeats(session, ack);
    session.registered.resolve(ack);
    this.emit("registered", ack);
    if (this.registrations > 1 && this.reconnectWaiters.length > 0) {
      this.reconnectsAwaited = this.registrations - 1;
      for (const waiter of this.reconnectWaiters.splice(0)) waiter.resolve(ack);
    }
  }

  private onChallenge(session: Session, challenge: AttestationChallenge): void {
    this.challenges.push(challenge);
    if (this.options.answerChallenges === false) return;
    const attestor = this.options.attestor;
    if (attestor) {
      const models = [...this.loaded].map((id) => ({ id, weightSha256: modelWeightSha256(id) }));
      void attestor.answer(challenge, models).then(
        (response) => {
          if (response && !session.halted) session.send(attestationResponseMessage(response));
        },
        () => undefined,
      );
      return;
    }
    // No attestor: the unsigned answer that `answerChallenges` promises.
    const status = new TextEncoder().encode(
      JSON.stringify({ machine_id: this.machineId, busy_slots: session.active.size }),
    );
    session.send(
      attestationResponseMessage({ nonce: challenge.nonce, timestampMs: challenge.timestampMs, status }),
    );
  }

  private onLoadModel(session: Session, kind: "load" | "unload", operationId: string, modelId: string): void {
    this.loadModels.push({ kind, operationId, modelId });
    session.send(loadStatusMessage(operationId, modelId, LoadModelState.STARTED));
    if (!this.served.has(modelId)) {
      const reason = `model ${JSON.stringify(modelId)} is not available on this provider`;
      session.send(loadStatusMessage(operationId, modelId, LoadModelState.FAILED, reason));
      return;
    }
    if (kind === "load") this.loaded.add(modelId);
    else {
      this.loaded.delete(modelId);
      this.warm.delete(modelId);
    }
    session.send(loadStatusMessage(operationId, modelId, LoadModelState.SUCCEEDED));
  }

  private onDrain(session: Session, drain: Drain): void {
    this.drains.push(drain);
    session.draining = true;
    session.ending ??= "drained";
    this.emit("drain", drain);
    session.closeIfDrained();
  }

  private startHeartbeats(session: Session, ack: RegisterAck): void {
    session.stopHeartbeats();
    if (session.halted || session.outbound.isClosed) return;
    const interval =
      this.options.heartbeatIntervalMs ?? (ack.heartbeatIntervalMs || DEFAULT_HEARTBEAT_INTERVAL_MS);
    this.sendHeartbeat(session);
    session.heartbeat = setInterval(() => this.sendHeartbeat(session), interval);
  }

  private sendHeartbeat(session: Session): void {
    const busySlots = session.active.size;
    let state = session.active.size > 0 ? ProviderState.SERVING : ProviderState.IDLE;
    if (session.draining) state = ProviderState.DRAINING;
    session.send(
      heartbeatMessage({
        state,
        loadedModels: [...this.loaded],
        warmModels: [...this.warm],
        requestsCompleted: BigInt(this.requestsCompleted),
        requestsFailed: BigInt(this.requestsFailed),
        tokensGenerated: BigInt(this.tokensGenerated),
        queueDepth: 0,
        busySlots,
        kvCacheUsage: Math.min(1, busySlots / this.maxBatch),
        prefillTokensPerSecond: this.options.prefillTokensPerSecond ?? 500,
        decodeTokensPerSecond: this.options.decodeTokensPerSecond ?? 50,
        memoryPressure: this.memoryPressure,
        thermalState: ThermalState.NOMINAL,
      }),
    );
    this.heartbeatsSent++;
  }

  private endSession(session: Session, error: unknown): void {
    session.quiesce();
    session.outbound.close();
    session.dialed.close();
    if (this.session === session) this.session = undefined;
    const reason = session.ending ?? (error === undefined ? "closed_by_coordinator" : "error");
    if (!session.ack) {
      session.registered.reject(error ?? new Error("the coordinator ended the stream before RegisterAck"));
    }
    const disconnect: Disconnect = { reason, providerId: session.ack?.providerId };
    if (error !== undefined) disconnect.error = error;
    this.emit("disconnected", disconnect);
    if (this.options.reconnect && !this.closed && this.registrations > 0) this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    const delay = backoffDelay(this.backoff, this.reconnectAttempt++);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (!this.closed && !this.session) this.open().catch(() => {});
    }, delay);
  }

  /** Marks the provider closed: no reconnect, waiters rejected. */
  private shutDown(): void {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const error = new Error("scripted provider was stopped");
    for (const waiter of this.reconnectWaiters.splice(0)) waiter.reject(error);
  }

  private registration(): RegisterInit {
    const cpuCores = os.availableParallelism();
    return {
      protocolVersion: PROTOCOL_VERSION,
      daemonVersion: this.options.daemonVersion ?? DAEMON_VERSION,
      machineId: this.machineId,
      hardware: {
        machineModel: "scripted",
        chip: "scripted",
        memoryBytes: BigInt(os.totalmem()),
        cpuCores,
        accelerator: AcceleratorKind.CPU,
        os: process.platform,
        osVersion: os.release(),
      },
      models: this.options.models.map((model) => ({
        id: model.id,
        quantization: "Q8_0",
        weightSha256: modelWeightSha256(model.id),
        contextLength: model.contextLength ?? this.maxContext,
        architecture: "scripted",
        features: model.features ?? [],
      })),
      engineBackend: "scripted",
      encryptionPublicKey: this.encryptionKey?.publicKey ?? EMPTY,
      ...(this.signingPublicKey
        ? { attestation: { publicKey: this.signingPublicKey, signer: SignerKind.SOFTWARE } }
        : {}),
      ...(this.attestation ? { attestation: this.attestation } : {}),
      accountToken: this.options.accountToken ?? "",
      capacity: { maxBatch: this.maxBatch, maxContext: this.maxContext },
      responseSignatureVersion: this.options.responseSignatureVersion ?? RESPONSE_SIGNATURE_VERSION,
      usageVersion: this.options.usageVersion ?? USAGE_VERSION,
      knobs: { kvBits: 8, maxContext: this.maxContext, maxBatch: this.maxBatch, threads: cpuCores },
    };
  }
}

/** Starts n providers in parallel; if any fails to register, stops the others and rethrows. */
export async function startScriptedProviders(
  n: number,
  options: ScriptedProviderOptions | ((index: number) => ScriptedProviderOptions),
): Promise<ScriptedProvider[]> {
  const providers = Array.from(
    { length: n },
    (_, i) => new ScriptedProvider(typeof options === "function" ? options(i) : options),
  );
  const results = await Promise.allSettled(providers.map((p) => p.start()));
  const failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failure) {
    await stopAll(providers);
    throw failure.reason;
  }
  return providers;
}

/** Stops providers gracefully, in parallel. */
export async function stopAll(providers: Iterable<ScriptedProvider>): Promise<void> {
  await Promise.all([...providers].map((p) => p.stop()));
}

/** The weight hash a scripted model registers with (and reports in challenge answers). */
export function modelWeightSha256(id: string): string {
  return createHash("sha256").update(id).digest("hex");
}
