import { EventEmitter } from "node:events";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type BackoffPolicy,
  backoffDelay,
  backoffPolicy,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  PROTOCOL_VERSION,
} from "@darkbloom/protocol";
import {
  type AttestationChallenge,
  type AttestationResponseSchema,
  type Cancel,
  type ConnectResponse,
  type Drain,
  type Heartbeat,
  type InferenceRequest,
  LoadModelState,
  ProviderState,
  type RegisterAck,
  type RuntimeStatus,
  type SignedAttestationSchema,
  ThermalState,
} from "@darkbloom/protocol/provider/v1";
import {
  acceptedMessage,
  attestationResponseMessage,
  ChunkDraft,
  completeMessage,
  type Dialed,
  dial,
  errorMessage,
  heartbeatMessage,
  type InferenceFailure,
  loadStatusMessage,
  Outbound,
  type RegisterInit,
  type ResponseSignatureInit,
  registerMessage,
} from "@darkbloom/protocol/provider-client";
import { type BoxKey, type BoxKeyPair, wipe } from "@darkbloom/protocol/sealed-box";
import {
  RESPONSE_SIGNATURE_VERSION,
  responseSha256,
  responseSignatureMessage,
  sha256,
  textChoices,
} from "@darkbloom/protocol/verifiable-response";
import type { Logger } from "pino";
import type {
  Engine,
  EngineStats,
  Generation,
  GenerationRequest,
  GenerationResult,
  ModelFile,
} from "../engine/engine.js";
import { type HardwareInit, memoryPressure } from "../machine/hardware.js";
import { inferenceFailure, Refusals } from "./errors.js";
import { choiceRequests, parseRequestBody } from "./request-body.js";

/** The serving settings reported at register. */
export interface ServingKnobs {
  /** 4 or 8; 0 when the KV cache is unquantized. */
  kvBits: number;
  maxContext: number;
  maxBatch: number;
  idleTimeoutMinutes: number;
  threads: number;
}

export interface ProviderLinkOptions {
  /** The coordinator's base URL, e.g. http://127.0.0.1:8080. */
  coordinatorUrl: string;
  engine: Engine;
  /** The models registered; requests and LoadModel for others are refused. */
  models: ModelFile[];
  /** Stable across reconnects and restarts. */
  machineId: string;
  /**
   * The provider's X25519 key pair: its public key is registered; requests must arrive sealed to it
   * (plaintext ones are refused) and every chunk goes back sealed to the request's ephemeral key.
   */
  encryptionKey: BoxKeyPair;
  /**
   * Signs each response (InferenceComplete.signature) with the attestation key: ECDSA P-256 over
   * SHA-256, DER. The daemon passes its attestation signer; without one responses go unsigned.
   */
  responseSigner?: ResponseSigner | undefined;
  /** From `darkbloom login`; empty when unlinked. */
  accountToken?: string;
  daemonVersion: string;
  hardware: HardwareInit;
  knobs: ServingKnobs;
  /** Overrides the RegisterAck's heartbeat interval. */
  heartbeatIntervalMs?: number | undefined;
  /** Overrides of the reconnect policy (1 s doubling to 30 s, ±20%). */
  backoff?: Partial<BackoffPolicy>;
  /** Jitter source (tests). */
  random?: () => number;
  /** A loaded model that served a request this recently is reported warm (default 5 minutes). */
  warmWindowMs?: number;
  /** Attests the machine at register and answers challenges; without it the provider is trust none. */
  attestor?: LinkAttestor | undefined;
  logger: Logger;
}

/** What the link needs to sign responses (the attestation signer implements it). */
export interface ResponseSigner {
  /** ECDSA-SHA256 over `data`, DER encoded. */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

/** What the link needs of attestation (trust/attestor.ts implements it). */
export interface LinkAttestor {
  /** Register.attestation: the blob signed at start, its signature and the signer's public key. */
  readonly attestation: MessageInitShape<typeof SignedAttestationSchema>;
  /** The answer to a challenge; `models` are the loaded models with their registered weight hashes. */
  respond(
    challenge: AttestationChallenge,
    models: ReadonlyArray<{ id: string; sha256: string }>,
  ): Promise<MessageInitShape<typeof AttestationResponseSchema>>;
}

/** rejected: the coordinator refused the registration itself (bad token, protocol version): final. */
export type DisconnectReason = "drained" | "closed_by_coordinator" | "error" | "stopped" | "rejected";

/** Codes with which a coordinator refuses a Register; retrying the same Register cannot succeed. */
const REFUSALS: ReadonlySet<Code> = new Set([
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.InvalidArgument,
  Code.FailedPrecondition,
]);

export interface LinkDisconnect {
  reason: DisconnectReason;
  providerId: string | undefined;
  error?: unknown;
  /** Delay before the next attempt; undefined when the link stopped. */
  reconnectInMs?: number | undefined;
}

export interface ProviderLinkEvents {
  registered: [RegisterAck];
  disconnected: [LinkDisconnect];
  request: [InferenceRequest];
  cancel: [Cancel];
  drain: [Drain];
  heartbeat: [Heartbeat];
  runtimeStatus: [RuntimeStatus];
}

/** Counters since the link was created. */
export interface LinkCounters {
  requestsCompleted: number;
  requestsFailed: number;
  requestsCancelled: number;
  registrations: number;
  heartbeatsSent: number;
}

interface ActiveRequest {
  requestId: string;
  model: string;
  session: Session;
  generations: Generation[];
  drafts: (ChunkDraft | undefined)[];
  results: (GenerationResult | undefined)[];
  n: number;
  nextSequence: bigint;
  /** The request's box key: chunks are sealed with it; wiped once the last one is on the wire. */
  key: BoxKey;
  /** SHA-256 of the request body as opened: what the response signature covers. */
  requestSha256: Uint8Array;
  /** Each choice's whole text as sent: the response bytes the signature covers. */
  texts: string[];
  /** Whether any chunk was queued: failures after that are not retryable elsewhere. */
  sent: boolean;
  /** A terminal message was sent, or the request was cancelled or lost: nothing more is sent. */
  finished: boolean;
}

/** One stream to the coordinator, from Register to its end. */
class Session {
  readonly outbound = new Outbound();
  readonly active = new Map<string, ActiveRequest>();
  ack: RegisterAck | undefined;
  draining = false;
  drainedByCoordinator = false;
  ended = false;
  heartbeat: NodeJS.Timeout | undefined;
  drainTimer: NodeJS.Timeout | undefined;
  done: Promise<void> = Promise.resolve();
  readonly idleWaiters = new Set<() => void>();

  constructor(readonly dialed: Dialed) {}
}

/** Time a stopping link gives the coordinator to end the stream after the provider ended its side. */
const STOP_GRACE_MS = 2_000;
const DEFAULT_WARM_WINDOW_MS = 5 * 60_000;

/**
 * The daemon's link to the coordinator: one ProviderService.Connect stream at a time, re-dialed with
 * backoff and jitter whenever it ends. It registers, heartbeats with the engine's live stats, turns
 * each InferenceRequest into one engine generation per choice and streams the tokens back, and
 * follows Cancel, LoadModel/UnloadModel and Drain.
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
  private readonly backoff: BackoffPolicy;
  private readonly lastUsed = new Map<string, number>();
  /** Models unloaded by an UnloadModel command; a request for one loads it again first. */
  private readonly unloaded = new Set<string>();
  private session: Session | undefined;
  private lastAck: RegisterAck | undefined;
  private started = false;
  private stopping = false;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;

  constructor(options: ProviderLinkOptions) {
    super();
    this.options = options;
    this.engine = options.engine;
    this.log = options.logger;
    this.served = new Map(options.models.map((m) => [m.id, m]));
    this.backoff = backoffPolicy(options.backoff);
  }

  /** The id of the current (or last) registration. */
  get providerId(): string | undefined {
    return this.lastAck?.providerId;
  }

  /** Whether a registered stream is open now. */
  get connected(): boolean {
    return this.session?.ack !== undefined && !this.session.ended;
  }

  /** Requests being served now. */
  get inFlight(): number {
    return this.session?.active.size ?? 0;
  }

  /** Dials and keeps dialing until stop() or close(). */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.open();
  }

  /** Resolves with the RegisterAck of the open stream, or of the next registration. */
  waitForRegistration(timeoutMs = 30_000): Promise<RegisterAck> {
    const current = this.session;
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
    this.stopping = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const session = this.session;
    if (!session || session.ended) return;
    session.draining = true;
    if (session.ack) this.sendHeartbeat(session);
    await this.waitForIdle(session, deadlineMs);
    for (const active of [...session.active.values()]) this.fail(active, Refusals.shutDown(active.sent));
    stopHeartbeats(session);
    session.outbound.close();
    const grace = setTimeout(() => session.dialed.close(), STOP_GRACE_MS);
    await session.done;
    clearTimeout(grace);
  }

  /** Immediate stop: cancels in-flight work and drops the connection. */
  async close(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const session = this.session;
    if (!session) return;
    this.endSession(session, undefined, "stopped");
    await session.done;
  }

  /** Drops the connection as a network failure would (tests); the link reconnects. */
  killConnection(): void {
    this.session?.dialed.kill();
  }

  private open(): void {
    const session = new Session(dial(this.options.coordinatorUrl));
    this.session = session;
    session.outbound.send(registerMessage(this.registration()));
    session.done = this.pump(session);
  }

  private async pump(session: Session): Promise<void> {
    let error: unknown;
    try {
      for await (const message of session.dialed.client.connect(session.outbound.messages())) {
        this.dispatch(session, message);
      }
    } catch (e) {
      error = e;
    }
    this.endSession(session, error);
  }

  private dispatch(session: Session, response: ConnectResponse): void {
    if (session.ended) return;
    const { message } = response;
    switch (message.case) {
      case "registerAck":
        this.onRegisterAck(session, message.value);
        return;
      case "inferenceRequest":
        this.onRequest(session, message.value);
        return;
      case "cancel":
        this.onCancel(session, message.value);
        return;
      case "loadModel":
        void this.onModelOperation(session, "load", message.value.operationId, message.value.modelId);
        return;
      case "unloadModel":
        void this.onModelOperation(session, "unload", message.value.operationId, message.value.modelId);
        return;
      case "drain":
        this.onDrain(session, message.value);
        return;
      case "runtimeStatus":
        this.log.info(
          {
            trustLevel: message.value.trustLevel,
            routable: message.value.routable,
            reasons: message.value.reasons.map((r) => r.code),
          },
          "runtime status from the coordinator",
        );
        this.emit("runtimeStatus", message.value);
        return;
      case "attestationChallenge":
        void this.onChallenge(session, message.value);
        return;
      case undefined:
        return;
    }
  }

  /** Answers an attestation challenge with the loaded models' hashes, signed by the attestor. */
  private async onChallenge(session: Session, challenge: AttestationChallenge): Promise<void> {
    const attestor = this.options.attestor;
    if (!attestor) {
      this.log.debug("attestation challenge ignored: this provider has no attestation key");
      return;
    }
    const models = this.engineStats()
      .loadedModels.map((id) => this.served.get(id))
      .filter((m): m is ModelFile => m !== undefined)
      .map((m) => ({ id: m.id, sha256: m.sha256 }));
    try {
      const response = await attestor.respond(challenge, models);
      if (!session.ended) session.outbound.send(attestationResponseMessage(response));
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, "could not answer an attestation challenge");
    }
  }

  private onRegisterAck(session: Session, ack: RegisterAck): void {
    session.ack = ack;
    this.lastAck = ack;
    this.attempt = 0;
    this.counters.registrations++;
    this.log.info(
      {
        providerId: ack.providerId,
        trustLevel: ack.trustLevel,
        heartbeatIntervalMs: ack.heartbeatIntervalMs,
      },
      "registered with the coordinator",
    );
    const interval =
      this.options.heartbeatIntervalMs ?? (ack.heartbeatIntervalMs || DEFAULT_HEARTBEAT_INTERVAL_MS);
    this.sendHeartbeat(session);
    session.heartbeat = setInterval(() => this.sendHeartbeat(session), interval);
    this.emit("registered", ack);
  }

  private onRequest(session: Session, request: InferenceRequest): void {
    const { requestId, model } = request;
    this.emit("request", request);
    if (session.active.has(requestId)) {
      this.log.warn({ requestId }, "duplicate InferenceRequest ignored");
      return;
    }
    let submissions: GenerationRequest[] = [];
    let refusal: InferenceFailure | undefined;
    let key: BoxKey | undefined;
    let requestSha256: Uint8Array = new Uint8Array();
    if (session.draining || this.stopping) refusal = Refusals.draining();
    else if (!this.served.has(model)) refusal = Refusals.modelNotServed(model);
    else if (request.body.case === "plaintextBody") refusal = Refusals.encryptionRequired();
    else if (request.body.case !== "sealedBody") refusal = Refusals.emptyBody();
    else {
      let body: Buffer | undefined;
      try {
        key = this.options.encryptionKey.keyFor(request.body.value.senderPublicKey);
        body = key.open(request.body.value);
      } catch {
        refusal = Refusals.unopenable();
      }
      if (body) {
        try {
          requestSha256 = sha256(body);
          const parsed = parseRequestBody(request.endpoint, body, request.maxTokens);
          submissions = choiceRequests(requestId, model, parsed);
        } catch (error) {
          refusal = inferenceFailure(error, false);
        } finally {
          wipe(body); // the prompt now lives only in the parsed strings
        }
      }
    }
    if (refusal) {
      key?.wipe();
      session.outbound.send(errorMessage(requestId, refusal));
      this.counters.requestsFailed++;
      this.log.info({ requestId, model, code: refusal.code }, "request refused");
      return;
    }
    const active: ActiveRequest = {
      requestId,
      model,
      session,
      generations: [],
      drafts: [],
      results: [],
      n: submissions.length,
      nextSequence: 0n,
      key: key as BoxKey,
      requestSha256,
      texts: submissions.map(() => ""),
      sent: false,
      finished: false,
    };
    session.active.set(requestId, active);
    this.lastUsed.set(model, Date.now());
    const file = this.served.get(model);
    if (file && this.unloaded.has(model)) {
      // Unloaded on the coordinator's command: load it again for this request.
      this.engine.load(file).then(
        () => {
          this.unloaded.delete(model);
          if (!active.finished) this.begin(active, submissions);
        },
        (error: unknown) => this.fail(active, inferenceFailure(error, false), error),
      );
      return;
    }
    this.begin(active, submissions);
  }

  /** Submits one generation per choice, then acknowledges the request. */
  private begin(active: ActiveRequest, submissions: GenerationRequest[]): void {
    const { session, requestId } = active;
    for (const [index, submission] of submissions.entries()) {
      try {
        active.generations.push(
          this.engine.generate(submission, (event) => this.onToken(active, index, event)),
        );
      } catch (error) {
        this.fail(active, inferenceFailure(error, active.sent), error);
        return;
      }
    }
    session.outbound.send(acceptedMessage(requestId));
    for (const [index, generation] of active.generations.entries()) {
      generation.done.then(
        (result) => this.onChoiceDone(active, index, result),
        (error: unknown) => this.fail(active, inferenceFailure(error, active.sent), error),
      );
    }
  }

  private onToken(active: ActiveRequest, choice: number, event: { text: string; tokens: number }): void {
    if (active.finished || (event.text === "" && event.tokens === 0)) return;
    active.texts[choice] += event.text;
    if (active.drafts[choice]?.append(event.text, event.tokens)) return;
    const draft = new ChunkDraft(
      active.requestId,
      active.nextSequence++,
      choice,
      event.text,
      event.tokens,
      active.key,
    );
    active.drafts[choice] = draft;
    active.sent = true;
    active.session.outbound.sendChunk(draft);
  }

  private onChoiceDone(active: ActiveRequest, choice: number, result: GenerationResult): void {
    if (active.finished) return;
    if (result.finishReason === "cancelled") {
      // Not cancelled by us (that marks the request finished first): the engine stopped it.
      this.fail(active, Refusals.cancelledByEngine(active.sent));
      return;
    }
    active.results[choice] = result;
    const results = active.results.filter((r): r is GenerationResult => r !== undefined);
    if (results.length < active.n) return;
    active.finished = true;
    const promptTokens = Math.max(...results.map((r) => r.promptTokens));
    const completionTokens = results.reduce((sum, r) => sum + r.completionTokens, 0);
    const choices = active.results.map((r, index) => ({ index, finishReason: r?.finishReason ?? "stop" }));
    const send = (signature?: ResponseSignatureInit) => {
      active.session.outbound.send(
        completeMessage(active.requestId, promptTokens, completionTokens, choices, signature),
      );
      this.counters.requestsCompleted++;
      this.release(active); // after the terminal message: releasing the last request may end a drain
    };
    const signer = this.options.responseSigner;
    if (!signer) {
      send();
      return;
    }
    // Everything the consumer is shown: the coordinator refuses a signature that differs from it.
    const responseHash = responseSha256({
      providerId: active.session.ack?.providerId ?? "",
      model: active.model,
      choices: textChoices(
        active.texts,
        choices.map((c) => c.finishReason),
      ),
      usage: { promptTokens, completionTokens },
    });
    signer.sign(responseSignatureMessage(active.requestSha256, responseHash)).then(
      (signature) =>
        send({
          requestSha256: active.requestSha256,
          responseSha256: responseHash,
          signature,
          version: RESPONSE_SIGNATURE_VERSION,
        }),
      (error: unknown) => {
        // Unsigned would be flagged by the coordinator; fail the request instead (retryable: nothing
        // reached the consumer yet only for non-streaming requests, which the coordinator knows).
        this.log.warn(
          { requestId: active.requestId, err: (error as Error).message },
          "response signing failed",
        );
        active.finished = false;
        this.fail(active, { ...Refusals.signingFailed(), retryable: false }, error);
      },
    );
  }

  /** Ends a request with an InferenceError and cancels its other choices. */
  private fail(active: ActiveRequest, failure: InferenceFailure, cause?: unknown): void {
    if (active.finished) return;
    active.finished = true;
    for (const generation of active.generations) generation.cancel();
    active.session.outbound.send(errorMessage(active.requestId, failure));
    this.counters.requestsFailed++;
    this.release(active);
    const level = failure.httpStatus >= 500 ? "warn" : "info";
    this.log[level](
      {
        requestId: active.requestId,
        model: active.model,
        code: failure.code,
        retryable: failure.retryable,
        err: cause instanceof Error && failure.code === "provider_error" ? cause.message : undefined,
      },
      "request failed",
    );
  }

  private onCancel(session: Session, cancel: Cancel): void {
    this.emit("cancel", cancel);
    const active = session.active.get(cancel.requestId);
    if (!active || active.finished) return;
    active.finished = true;
    for (const generation of active.generations) generation.cancel();
    this.release(active);
    this.counters.requestsCancelled++;
    this.log.info(
      { requestId: cancel.requestId, reason: cancel.reason },
      "request cancelled by the coordinator",
    );
  }

  private release(active: ActiveRequest): void {
    const { session } = active;
    if (session.active.get(active.requestId) !== active) return;
    session.active.delete(active.requestId);
    // Drafts of this request still queued are sealed when the transport takes them: wipe after.
    session.outbound.afterFlush(() => active.key.wipe());
    if (session.active.size === 0) {
      for (const wake of [...session.idleWaiters]) wake();
      if (session.drainedByCoordinator) this.finishDrain(session);
    }
  }

  private async onModelOperation(
    session: Session,
    kind: "load" | "unload",
    operationId: string,
    modelId: string,
  ): Promise<void> {
    const send = (state: LoadModelState, reason = "") => {
      if (!session.ended) session.outbound.send(loadStatusMessage(operationId, modelId, state, reason));
    };
    send(LoadModelState.STARTED);
    const model = this.served.get(modelId);
    if (!model) {
      send(LoadModelState.FAILED, `model ${JSON.stringify(modelId)} is not served by this provider`);
      return;
    }
    const started = performance.now();
    try {
      if (kind === "load") await this.engine.load(model);
      else await this.engine.unload(modelId);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      this.log.warn({ operationId, model: modelId, kind, reason }, "model operation failed");
      send(LoadModelState.FAILED, reason || `${kind} failed`);
      return;
    }
    this.log.info(
      { operationId, model: modelId, kind, ms: Math.round(performance.now() - started) },
      "model operation done",
    );
    if (kind === "load") this.unloaded.delete(modelId);
    else this.unloaded.add(modelId);
    send(LoadModelState.SUCCEEDED);
    if (session.ack && !session.ended) this.sendHeartbeat(session); // loaded models changed
  }

  private onDrain(session: Session, drain: Drain): void {
    this.emit("drain", drain);
    this.log.info(
      { reason: drain.reason, deadlineMs: drain.deadlineMs, inFlight: session.active.size },
      "drain requested",
    );
    session.draining = true;
    session.drainedByCoordinator = true;
    this.sendHeartbeat(session);
    if (session.active.size === 0) {
      this.finishDrain(session);
      return;
    }
    if (drain.deadlineMs > 0) {
      session.drainTimer = setTimeout(() => {
        for (const active of [...session.active.values()]) this.fail(active, Refusals.shutDown(active.sent));
        this.finishDrain(session);
      }, drain.deadlineMs);
    }
  }

  /** Ends our side of a drained stream; the coordinator then ends its side and the link reconnects. */
  private finishDrain(session: Session): void {
    clearTimeout(session.drainTimer);
    stopHeartbeats(session);
    session.outbound.close();
  }

  private sendHeartbeat(session: Session): void {
    if (session.ended || session.outbound.isClosed) return;
    const stats = this.engineStats();
    const loaded = new Set(stats.loadedModels);
    const now = Date.now();
    const warmWindow = this.options.warmWindowMs ?? DEFAULT_WARM_WINDOW_MS;
    const warm = [...this.lastUsed]
      .filter(([id, at]) => loaded.has(id) && now - at <= warmWindow)
      .map(([id]) => id);
    let state = ProviderState.IDLE;
    if (session.draining || this.stopping) state = ProviderState.DRAINING;
    else if (session.active.size > 0 || stats.busySlots > 0) state = ProviderState.SERVING;
    const message = heartbeatMessage({
      state,
      loadedModels: [...loaded],
      warmModels: warm,
      requestsCompleted: BigInt(this.counters.requestsCompleted),
      requestsFailed: BigInt(this.counters.requestsFailed),
      tokensGenerated: BigInt(Math.max(0, Math.floor(stats.tokensGenerated))),
      queueDepth: stats.queueDepth,
      busySlots: stats.busySlots,
      kvCacheUsage: Math.min(1, Math.max(0, stats.kvCacheUsage)),
      prefillTokensPerSecond: stats.prefillTokensPerSecond,
      decodeTokensPerSecond: stats.decodeTokensPerSecond,
      memoryPressure: memoryPressure(),
      thermalState: ThermalState.NOMINAL,
    });
    if (session.outbound.send(message)) {
      this.counters.heartbeatsSent++;
      if (message.message.case === "heartbeat") this.emit("heartbeat", message.message.value);
    }
  }

  private engineStats(): EngineStats {
    try {
      return this.engine.stats();
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, "engine stats failed");
      return {
        busySlots: 0,
        queueDepth: 0,
        kvCacheUsage: 0,
        prefillTokensPerSecond: 0,
        decodeTokensPerSecond: 0,
        loadedModels: [],
        requestsCompleted: 0,
        requestsFailed: 0,
        tokensGenerated: 0,
      };
    }
  }

  private endSession(session: Session, error: unknown, forced?: DisconnectReason): void {
    if (session.ended) return;
    session.ended = true;
    stopHeartbeats(session);
    clearTimeout(session.drainTimer);
    // The coordinator fails or retries what was in flight; free the engine at once.
    for (const active of session.active.values()) {
      session.outbound.afterFlush(() => active.key.wipe());
      if (active.finished) continue;
      active.finished = true;
      for (const generation of active.generations) generation.cancel();
    }
    session.active.clear();
    for (const wake of [...session.idleWaiters]) wake();
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
    const fields = {
      providerId,
      reason,
      reconnectInMs,
      err: error === undefined ? undefined : error instanceof ConnectError ? error.rawMessage : String(error),
    };
    if (reason === "rejected")
      this.log.error(fields, "the coordinator refused the registration; not retrying");
    else if (reason === "error" && !session.ack)
      this.log.warn(fields, "could not register with the coordinator");
    else if (reason === "error") this.log.warn(fields, "coordinator stream failed");
    else this.log.info(fields, "coordinator stream ended");
    const disconnect: LinkDisconnect = { reason, providerId, reconnectInMs };
    if (error !== undefined) disconnect.error = error;
    this.emit("disconnected", disconnect);
  }

  private waitForIdle(session: Session, timeoutMs: number): Promise<void> {
    if (session.active.size === 0 || session.ended) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        session.idleWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      session.idleWaiters.add(done);
    });
  }

  private registration(): RegisterInit {
    const { knobs } = this.options;
    return {
      protocolVersion: PROTOCOL_VERSION,
      daemonVersion: this.options.daemonVersion,
      machineId: this.options.machineId,
      hardware: this.options.hardware,
      models: this.options.models.map((m) => ({
        id: m.id,
        sizeBytes: BigInt(m.sizeBytes),
        quantization: m.quantization,
        weightSha256: m.sha256,
        contextLength: m.contextLength > 0 ? Math.min(m.contextLength, knobs.maxContext) : knobs.maxContext,
        architecture: m.architecture,
      })),
      engineBackend: this.engine.backend,
      encryptionPublicKey: this.options.encryptionKey.publicKey,
      ...(this.options.attestor ? { attestation: this.options.attestor.attestation } : {}),
      accountToken: this.options.accountToken ?? "",
      capacity: { maxBatch: knobs.maxBatch, maxContext: knobs.maxContext },
      responseSignatureVersion: RESPONSE_SIGNATURE_VERSION,
      knobs: {
        kvBits: knobs.kvBits,
        maxContext: knobs.maxContext,
        maxBatch: knobs.maxBatch,
        idleTimeoutMinutes: knobs.idleTimeoutMinutes,
        threads: knobs.threads,
      },
    };
  }
}

function stopHeartbeats(session: Session): void {
  clearInterval(session.heartbeat);
  session.heartbeat = undefined;
}
