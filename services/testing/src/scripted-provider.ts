import { createHash, createPublicKey, type KeyObject, randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import * as os from "node:os";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type BackoffPolicy,
  backoffDelay,
  backoffPolicy,
  Channel,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  PROTOCOL_VERSION,
} from "@darkbloom/protocol";
import {
  AcceleratorKind,
  type AttestationChallenge,
  type AttestationResponseSchema,
  type Cancel,
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  type Drain,
  type InferenceRequest,
  LoadModelState,
  MemoryPressure,
  ProviderState,
  type RegisterAck,
  type RuntimeStatus,
  type SignedAttestationSchema,
  SignerKind,
  ThermalState,
} from "@darkbloom/protocol/provider/v1";
import { type BoxKey, BoxKeyPair } from "@darkbloom/protocol/sealed-box";
import { RESPONSE_SIGNATURE_VERSION, sha256, textChoices } from "@darkbloom/protocol/verifiable-response";
import { type Dialed, dial, type SharedConnection, type TransportKind } from "./dial.js";
import {
  acceptedMessage,
  attestationResponseMessage,
  chunkMessage,
  completeMessage,
  errorMessage,
  heartbeatMessage,
  loadStatusMessage,
  type ResponseSignatureInit,
  registerMessage,
  sealedChunkMessage,
} from "./messages.js";
import { type ForgedSignature, signResponse } from "./response-signing.js";
import {
  defaultScript,
  type FailureMode,
  type Plan,
  planFor,
  type ReceivedRequest,
  type ScriptError,
  type ScriptFn,
} from "./script.js";

export interface ScriptedModel {
  id: string;
  /** Context length advertised for the model (default: the provider's maxContext). */
  contextLength?: number;
}

/** Attests a scripted provider with real signing code (security tests inject the daemon's). */
export interface ScriptedAttestor {
  /** Register.attestation, made once at start for this provider's identity and encryption key. */
  attestation(init: {
    machineId: string;
    daemonVersion: string;
    encryptionPublicKey: Uint8Array;
  }): Promise<MessageInitShape<typeof SignedAttestationSchema>>;
  /** The answer to a challenge (undefined: stay silent); `models` are the loaded models and hashes. */
  answer(
    challenge: AttestationChallenge,
    models: Array<{ id: string; weightSha256: string }>,
  ): Promise<MessageInitShape<typeof AttestationResponseSchema> | undefined>;
}

export interface ScriptedProviderOptions {
  /** The coordinator's base URL, e.g. http://127.0.0.1:8080. */
  baseUrl: string;
  models: ScriptedModel[];
  /** Capacity.max_batch: concurrent requests admitted (default 4); more are refused with a 503. */
  maxBatch?: number;
  /** Capacity.max_context (default: the largest model context, else 8192). */
  maxContext?: number;
  /** Stable across reconnects (default: a random "scripted-…" id). */
  machineId?: string;
  /** Register.account_token (default empty: unlinked). */
  accountToken?: string;
  /** Reported in heartbeats (default 50). */
  decodeTokensPerSecond?: number;
  /** Reported in heartbeats (default 500). */
  prefillTokensPerSecond?: number;
  /** Overrides RegisterAck.heartbeat_interval_ms. */
  heartbeatIntervalMs?: number;
  /** Default true; false simulates a provider whose stream stays open but that never heartbeats. */
  sendHeartbeats?: boolean;
  /** Reconnect after the stream ends, unless stopped or killed (default false). */
  reconnect?: boolean;
  /** Overrides of the protocol's RECONNECT_BACKOFF (1 s doubling to 30 s, ±20%). */
  reconnectBackoff?: Partial<BackoffPolicy>;
  /** What to answer to each request (default: 16 tokens "tok0 ".."tok15 " at once). */
  script?: ScriptFn;
  /** RPC protocol on the HTTP/2 connection (default "connect"); ignored with `connection`. */
  transport?: TransportKind;
  /**
   * Open the provider's stream on this shared HTTP/2 connection instead of dialing one of its own
   * (scale tests: thousands of providers over a few sockets). kill() and scripted disconnects then
   * reset only this provider's stream instead of destroying a socket.
   */
  connection?: SharedConnection;
  /** Answer AttestationChallenges with an unsigned AttestationResponse (default true). */
  answerChallenges?: boolean;
  /** Signs the Register's attestation and answers challenges; overrides the unsigned answers. */
  attestor?: ScriptedAttestor;
  /** Register.daemon_version (default "0.0.0-test"). */
  daemonVersion?: string;
  /**
   * End-to-end encryption (default true): registers an X25519 key, opens sealed requests, refuses
   * plaintext ones (400 encryption_required) and seals every chunk. false registers without a key
   * and speaks plaintext, for coordinators that allow it (development, benchmarks).
   */
  encryption?: boolean;
  /**
   * A P-256 private key to sign responses with (InferenceComplete.signature); its public key is sent
   * as Register.attestation.public_key. Default: none (unsigned responses).
   */
  responseSigningKey?: KeyObject;
  /** Register.response_signature_version (default 2; 0 registers as a daemon from before it). */
  responseSignatureVersion?: number;
  /** Ways to break the data path's rules, for security tests. */
  misbehave?: Misbehaviour;
  /**
   * Keep received, completed, failed and cancelled (default true). Benchmarks turn it off so that
   * a long run does not hold every request in memory; counters are kept either way.
   */
  recordRequests?: boolean;
}

/** A provider that breaks the data path's rules (security tests). */
export interface Misbehaviour {
  /** Answer sealed requests with plaintext chunks. */
  plaintextChunks?: boolean;
  /** Seal chunks with a key derived from another key pair (the coordinator cannot open them). */
  sealChunksToAnotherKey?: boolean;
  /**
   * Forge the response signature: hash another request body, hash a tampered text, sign another
   * usage, finish reason, model or provider id than the ones sent, sign with another key than the
   * registered one, or sign version 1 (the texts only, as daemons before version 2 did).
   */
  forgeSignature?: ForgedSignature;
}

/** A LoadModel or UnloadModel command the provider received. */
export interface LoadModelCommand {
  kind: "load" | "unload";
  operationId: string;
  modelId: string;
}

/** Why a session ended. "disconnect" is a scripted failure that dropped the connection. */
export type DisconnectReason =
  | "stopped"
  | "killed"
  | "drained"
  | "disconnect"
  | "closed_by_coordinator"
  | "error";

export interface Disconnect {
  reason: DisconnectReason;
  /** The provider id of the session that ended (undefined when it never registered). */
  providerId: string | undefined;
  /** The stream error, when the stream failed rather than ended. */
  error?: unknown;
}

export interface ScriptedProviderEvents {
  /** Every message from the coordinator as it came off the stream, before it is handled. */
  wire: [ConnectResponse];
  request: [ReceivedRequest];
  cancel: [Cancel];
  drain: [Drain];
  disconnected: [Disconnect];
  registered: [RegisterAck];
}

/** Time stop() gives the coordinator to end the response after the provider ended its requests. */
const STOP_GRACE_MS = 2_000;
/** Queued outbound messages above which zero-delay generation waits for the stream to catch up... */
const OUTBOUND_HIGH_WATER = 512;
/** ...until this many are left. */
const OUTBOUND_LOW_WATER = 128;
const DEFAULT_CONTEXT = 8_192;
/** Event-loop turns a scripted disconnect waits, once the outbound queue is empty, for HTTP/2 to write it. */
const FLUSH_TURNS = 3;

interface ActiveRequest {
  stopped: boolean;
  /** Ends the pause (delay or stall) the request is in, if any. */
  wake: (() => void) | undefined;
  /** The request's box key (sealed requests): chunks are sealed with it; wiped when the request ends. */
  key: BoxKey | undefined;
  /** SHA-256 of the request body as opened (what the response signature covers). */
  requestSha256: Uint8Array;
  /** InferenceRequest.model (what the response signature covers). */
  model: string;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

/** One stream to the coordinator, from Register to its end. */
class Session {
  readonly outbound = new Channel<ConnectRequest>();
  readonly active = new Map<string, ActiveRequest>();
  readonly registered = deferred<RegisterAck>();
  ack: RegisterAck | undefined;
  draining = false;
  halted = false;
  ending: DisconnectReason | undefined;
  heartbeat: NodeJS.Timeout | undefined;
  done: Promise<void> = Promise.resolve();
  private caughtUp: Promise<void> | undefined;

  constructor(readonly dialed: Dialed) {
    // start() reports the failure; a reconnect attempt's failure is handled by its session end.
    this.registered.promise.catch(() => {});
  }

  send(message: ConnectRequest): void {
    this.outbound.offer(message);
  }

  /** Whether producers should wait for the transport before queueing more. */
  get congested(): boolean {
    return this.outbound.size > OUTBOUND_HIGH_WATER;
  }

  /** Resolves once the outbound queue is down to the low-water mark; one poller serves every waiter. */
  catchUp(): Promise<void> {
    this.caughtUp ??= this.pollQueue();
    return this.caughtUp;
  }

  private async pollQueue(): Promise<void> {
    while (this.outbound.size > OUTBOUND_LOW_WATER && !this.halted) await yieldToEventLoop();
    this.caughtUp = undefined;
  }
}

/**
 * A provider that speaks the real protocol over a real HTTP/2 stream and answers requests from a
 * script instead of an engine. Coordinator tests drive it; the benchmark runs many of them.
 */
export class ScriptedProvider extends EventEmitter<ScriptedProviderEvents> {
  readonly machineId: string;
  readonly received: ReceivedRequest[] = [];
  readonly completed: string[] = [];
  readonly failed: string[] = [];
  readonly cancelled: string[] = [];
  readonly drains: Drain[] = [];
  readonly challenges: AttestationChallenge[] = [];
  readonly runtimeStatuses: RuntimeStatus[] = [];
  readonly loadModels: LoadModelCommand[] = [];
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
  private readonly script: ScriptFn;
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
    this.script = options.script ?? defaultScript;
    this.backoff = backoffPolicy(options.reconnectBackoff);
    this.heartbeating = options.sendHeartbeats ?? true;
    this.encryptionKey = options.encryption === false ? undefined : BoxKeyPair.generate();
    if (options.responseSigningKey) {
      const der = createPublicKey(options.responseSigningKey).export({ format: "der", type: "spki" });
      this.signingPublicKey = new Uint8Array(der.subarray(der.length - 65));
    }
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
    this.quiesce(session);
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
    this.quiesce(session);
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
    else stopHeartbeats(session);
  }

  private open(): Promise<RegisterAck> {
    const session = new Session(
      this.options.connection?.dial() ?? dial(this.options.baseUrl, this.options.transport ?? "connect"),
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
      const stream = session.dialed.client.connect(abortable(session.outbound), signal ? { signal } : {});
      for await (const message of stream) {
        this.dispatch(session, message);
      }
    } catch (e) {
      error = e;
    }
    this.endSession(session, error);
  }

  private dispatch(session: Session, response: ConnectResponse): void {
    this.emit("wire", response);
    const { message } = response;
    switch (message.case) {
      case "registerAck":
        this.onRegisterAck(session, message.value);
        break;
      case "inferenceRequest":
        this.onRequest(session, message.value);
        break;
      case "cancel":
        this.onCancel(session, message.value);
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

  private onRequest(session: Session, request: InferenceRequest): void {
    const opened = this.openBody(request);
    const received = receive(request, opened.body);
    if (this.options.recordRequests !== false) this.received.push(received);
    this.emit("request", received);
    if (session.halted) {
      opened.key?.wipe();
      return;
    }
    const refusal = this.refusal(session, request, received, opened.refusal);
    if (refusal) {
      opened.key?.wipe();
      this.sendError(session, received.requestId, refusal);
      return;
    }
    let plan: Plan;
    try {
      plan = planFor(this.script(received), received);
    } catch (error) {
      opened.key?.wipe();
      const reason = error instanceof Error ? error.message : String(error);
      this.sendError(session, received.requestId, providerError(`the provider's script threw: ${reason}`));
      return;
    }
    const active: ActiveRequest = {
      stopped: false,
      wake: undefined,
      key: opened.key,
      requestSha256: this.options.responseSigningKey ? sha256(received.rawBody) : EMPTY,
      model: received.model,
    };
    session.active.set(received.requestId, active);
    this.loaded.add(received.model);
    this.warm.add(received.model);
    void this.serve(session, received.requestId, plan, active);
  }

  /** Opens a sealed body with the provider's key; plaintext is read only with encryption off. */
  private openBody(request: InferenceRequest): { body: Uint8Array; key?: BoxKey; refusal?: ScriptError } {
    const body = request.body;
    if (!this.encryptionKey) {
      if (body.case === "plaintextBody") return { body: body.value };
      return { body: EMPTY, refusal: invalidRequest("this provider has no encryption key; send plaintext") };
    }
    if (body.case === "plaintextBody") {
      return {
        body: EMPTY,
        refusal: {
          httpStatus: 400,
          code: "encryption_required",
          message: "this provider only accepts sealed request bodies",
          retryable: false,
        },
      };
    }
    if (body.case !== "sealedBody")
      return { body: EMPTY, refusal: invalidRequest("the request has no body") };
    let key: BoxKey | undefined;
    try {
      key = this.encryptionKey.keyFor(body.value.senderPublicKey);
      return { body: key.open(body.value), key };
    } catch {
      key?.wipe();
      return {
        body: EMPTY,
        refusal: {
          httpStatus: 500,
          code: "decryption_failed",
          message: "the sealed request body did not open with this provider's key",
          retryable: true,
        },
      };
    }
  }

  private refusal(
    session: Session,
    request: InferenceRequest,
    received: ReceivedRequest,
    bodyRefusal: ScriptError | undefined,
  ): ScriptError | undefined {
    if (!this.served.has(request.model)) {
      return invalidRequest(`model ${JSON.stringify(request.model)} is not served by this provider`);
    }
    if (bodyRefusal) return bodyRefusal;
    if (received.body === undefined) return invalidRequest("request body is not valid JSON");
    if (session.active.has(request.requestId)) {
      return invalidRequest(`request ${request.requestId} is already in flight`);
    }
    if (session.draining) return unavailable("provider_draining", "provider is draining");
    if (session.active.size >= this.maxBatch) {
      return unavailable("provider_busy", `all ${this.maxBatch} batch slots are busy`);
    }
    return undefined;
  }

  private async serve(session: Session, requestId: string, plan: Plan, active: ActiveRequest): Promise<void> {
    try {
      await this.play(session, requestId, plan, active);
    } finally {
      this.release(session, requestId, active);
      active.key?.wipe();
    }
  }

  /** Accept, prefill, chunks, complete: the script's request lifecycle, with its failure on the way. */
  private async play(session: Session, requestId: string, plan: Plan, active: ActiveRequest): Promise<void> {
    const failure = plan.failure;
    if (failure?.when === "before_accept") {
      await this.fail(session, requestId, failure.mode, active);
      return;
    }
    session.send(acceptedMessage(requestId));
    if (plan.firstTokenDelayMs > 0) await pause(active, plan.firstTokenDelayMs);
    if (active.stopped) return;
    if (failure?.when === "before_first_token") {
      await this.fail(session, requestId, failure.mode, active);
      return;
    }
    await this.generate(session, requestId, plan, active);
    if (active.stopped) return;
    if (failure) await this.fail(session, requestId, failure.mode, active);
    else this.complete(session, requestId, plan, active);
  }

  /** Sends the plan's chunks: `tokensPerChunk` tokens per chunk, one chunk per choice per step. */
  private async generate(
    session: Session,
    requestId: string,
    plan: Plan,
    active: ActiveRequest,
  ): Promise<void> {
    const { tokens, emit, choices, tokensPerChunk, interTokenDelayMs } = plan;
    const misbehave = this.options.misbehave;
    let key = misbehave?.plaintextChunks ? undefined : active.key;
    if (key && misbehave?.sealChunksToAnotherKey && this.encryptionKey) {
      key = this.encryptionKey.keyFor(BoxKeyPair.generate().publicKey);
    }
    let sequence = 0n;
    for (let position = 0; position < emit; ) {
      const end = Math.min(position + tokensPerChunk, emit);
      const count = end - position;
      if (position > 0) {
        if (interTokenDelayMs > 0) await pause(active, interTokenDelayMs * count);
        else if (session.congested) await session.catchUp();
        if (active.stopped) return;
      }
      const text = count === 1 ? (tokens[position] ?? "") : tokens.slice(position, end).join("");
      const claimed = plan.claimedTokensPerChunk ?? count;
      for (let choice = 0; choice < choices; choice++) {
        session.send(
          key
            ? sealedChunkMessage(requestId, sequence++, key, text, claimed, choice)
            : chunkMessage(requestId, sequence++, text, claimed, choice),
        );
      }
      this.tokensGenerated += count * choices;
      position = end;
    }
  }

  private complete(session: Session, requestId: string, plan: Plan, active: ActiveRequest): void {
    const completionTokens = plan.completionTokens ?? plan.emit * plan.choices;
    session.send(
      completeMessage(
        requestId,
        plan.promptTokens,
        completionTokens,
        plan.choices,
        plan.finishReason,
        this.signResponse(session, plan, active, completionTokens),
      ),
    );
    this.requestsCompleted++;
    if (this.options.recordRequests !== false) this.completed.push(requestId);
  }

  /** The response signature over the request as opened and the response as sent. */
  private signResponse(
    session: Session,
    plan: Plan,
    active: ActiveRequest,
    completionTokens: number,
  ): ResponseSignatureInit | undefined {
    const key = this.options.responseSigningKey;
    if (!key) return undefined;
    return signResponse(key, this.options.misbehave?.forgeSignature, active.requestSha256, {
      providerId: session.ack?.providerId ?? "",
      model: active.model,
      choices: textChoices(
        Array.from({ length: plan.choices }, () => plan.tokens.slice(0, plan.emit).join("")),
        Array.from({ length: plan.choices }, () => plan.finishReason),
      ),
      usage: { promptTokens: plan.promptTokens, completionTokens },
    });
  }

  private async fail(
    session: Session,
    requestId: string,
    mode: FailureMode,
    active: ActiveRequest,
  ): Promise<void> {
    if (mode === "stall") {
      await stall(active);
    } else if (mode === "disconnect") {
      await this.dropConnection(session);
    } else {
      this.sendError(session, requestId, mode);
    }
  }

  private sendError(session: Session, requestId: string, error: ScriptError): void {
    session.send(errorMessage(requestId, error));
    this.requestsFailed++;
    if (this.options.recordRequests !== false) this.failed.push(requestId);
  }

  /** Frees the request's slot (if it still holds it) and ends a drain that waited for it. */
  private release(session: Session, requestId: string, active: ActiveRequest): void {
    if (session.active.get(requestId) !== active) return;
    session.active.delete(requestId);
    this.closeIfDrained(session);
  }

  private onCancel(session: Session, cancel: Cancel): void {
    if (this.options.recordRequests !== false) this.cancelled.push(cancel.requestId);
    const active = session.active.get(cancel.requestId);
    if (active) {
      stopRequest(active);
      this.release(session, cancel.requestId, active);
    }
    this.emit("cancel", cancel);
  }

  private onChallenge(session: Session, challenge: AttestationChallenge): void {
    this.challenges.push(challenge);
    if (this.options.answerChallenges === false) return;
    const attestor = this.options.attestor;
    if (attestor) {
      const models = [...this.loaded].map((id) => ({ id, weightSha256: modelWeightSha256(id) }));
      void attestor.answer(challenge, models).then(
        (response) => {
          if (response && !session.halted) {
            session.send(
              create(ConnectRequestSchema, { message: { case: "attestationResponse", value: response } }),
            );
          }
        },
        () => undefined,
      );
      return;
    }
    const status = new TextEncoder().encode(
      JSON.stringify({ machine_id: this.machineId, busy_slots: session.active.size }),
    );
    session.send(attestationResponseMessage(challenge.nonce, challenge.timestampMs, status));
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
    this.closeIfDrained(session);
  }

  private closeIfDrained(session: Session): void {
    if (!session.draining || session.active.size > 0) return;
    stopHeartbeats(session);
    session.outbound.close();
  }

  private startHeartbeats(session: Session, ack: RegisterAck): void {
    stopHeartbeats(session);
    if (session.halted || session.outbound.isClosed) return;
    const interval =
      this.options.heartbeatIntervalMs ?? (ack.heartbeatIntervalMs || DEFAULT_HEARTBEAT_INTERVAL_MS);
    this.sendHeartbeat(session);
    session.heartbeat = setInterval(() => this.sendHeartbeat(session), interval);
  }

  private sendHeartbeat(session: Session): void {
    const busySlots = session.active.size;
    session.send(
      heartbeatMessage({
        state: providerState(session),
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
        memoryPressure: MemoryPressure.NORMAL,
        thermalState: ThermalState.NOMINAL,
      }),
    );
    this.heartbeatsSent++;
  }

  /** Stops the session's local work (heartbeats, in-flight requests); nothing more is produced for it. */
  private quiesce(session: Session): void {
    if (session.halted) return;
    session.halted = true;
    stopHeartbeats(session);
    for (const active of session.active.values()) stopRequest(active);
    session.active.clear();
  }

  /**
   * A scripted "disconnect": the connection drops like a killed process's, but only once what the
   * provider already produced is on the wire, so the coordinator sees the tokens sent before it.
   */
  private async dropConnection(session: Session): Promise<void> {
    session.ending ??= "disconnect";
    this.quiesce(session);
    while (session.outbound.size > 0) await yieldToEventLoop();
    for (let turn = 0; turn < FLUSH_TURNS; turn++) await yieldToEventLoop();
    session.dialed.kill();
  }

  private endSession(session: Session, error: unknown): void {
    this.quiesce(session);
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

  private registration(): Parameters<typeof registerMessage>[0] {
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

const EMPTY = new Uint8Array();

function receive(request: InferenceRequest, rawBody: Uint8Array): ReceivedRequest {
  return {
    requestId: request.requestId,
    model: request.model,
    endpoint: request.endpoint,
    sealed: request.body.case === "sealedBody",
    body: parseJson(rawBody),
    rawBody,
    maxTokens: request.maxTokens,
    stream: request.stream,
    promptTokensEstimate: request.promptTokensEstimate,
  };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function parseJson(bytes: Uint8Array): unknown {
  if (bytes.length === 0) return undefined;
  try {
    return JSON.parse(utf8.decode(bytes));
  } catch {
    return undefined;
  }
}

function invalidRequest(message: string): ScriptError {
  return { httpStatus: 400, code: "invalid_request_error", message, retryable: false };
}

function unavailable(code: string, message: string): ScriptError {
  return { httpStatus: 503, code, message, retryable: true };
}

function providerError(message: string): ScriptError {
  return { httpStatus: 500, code: "provider_error", message, retryable: false };
}

function providerState(session: Session): ProviderState {
  if (session.draining) return ProviderState.DRAINING;
  return session.active.size > 0 ? ProviderState.SERVING : ProviderState.IDLE;
}

function stopHeartbeats(session: Session): void {
  clearInterval(session.heartbeat);
  session.heartbeat = undefined;
}

function stopRequest(active: ActiveRequest): void {
  active.stopped = true;
  const wake = active.wake;
  active.wake = undefined;
  wake?.();
}

/** Waits ms, or less when the request is stopped meanwhile. */
function pause(active: ActiveRequest, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      active.wake = undefined;
      resolve();
    }, ms);
    active.wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
}

/** Waits until the request is stopped (cancelled, or its stream ends). */
function stall(active: ActiveRequest): Promise<void> {
  if (active.stopped) return Promise.resolve();
  return new Promise((resolve) => {
    active.wake = resolve;
  });
}

/**
 * The channel as an iterable whose iterator also implements throw(), which the Connect client needs
 * to abort the request stream; next() goes straight to the channel.
 */
function abortable<T>(channel: Channel<T>): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]: () => {
      const inner = channel[Symbol.asyncIterator]();
      return {
        next: () => inner.next(),
        return: () => inner.return?.() ?? Promise.resolve({ done: true, value: undefined }),
        throw: (error: unknown) => {
          void inner.return?.();
          return Promise.reject(error);
        },
      };
    },
  };
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const DAEMON_VERSION = "0.0.0-test";

/** The weight hash a scripted model registers with (and reports in challenge answers). */
export function modelWeightSha256(id: string): string {
  return createHash("sha256").update(id).digest("hex");
}
