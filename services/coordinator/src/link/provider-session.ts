import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { Channel } from "@darkbloom/protocol";
import {
  type AttestationResponse,
  type ChunkPayload,
  type ConnectRequest,
  type ConnectResponse,
  ConnectResponseSchema,
  type InferenceChunk,
  type InferenceComplete,
  type InferenceError,
  type InferenceRequestSchema,
  LoadModelState,
  type LoadModelStatus,
} from "@darkbloom/protocol/provider/v1";
import type { BoxKey } from "@darkbloom/protocol/sealed-box";
import type { Logger } from "../log.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import { openChunk } from "./chunk-opening.js";

export { EncryptionViolation } from "./chunk-opening.js";

/** Receives what a provider sends about one dispatched request. Exactly one terminal call happens. */
export interface CallObserver {
  /** A forwarded request reached the replica holding the provider's stream, which dispatched it. */
  admitted?(): void;
  accepted(): void;
  chunk(payload: ChunkPayload): void;
  complete(message: InferenceComplete): void;
  error(message: InferenceError): void;
  /** The provider went away or broke the protocol for this request. */
  lost(reason: string): void;
  /**
   * Set for a relayed call (a request forwarded from the replica that holds its key): its chunks
   * are handed over as the provider sent them, sequence-checked and unopened, instead of to chunk().
   */
  relay?(chunk: InferenceChunk): void;
}

interface Call {
  observer: CallObserver;
  nextSequence: bigint;
  /** The request's box key: chunks must be sealed with it. Undefined for a plaintext dispatch. */
  key: BoxKey | undefined;
}

export type InferenceRequestInit = MessageInitShape<typeof InferenceRequestSchema>;

/**
 * One provider's stream as the coordinator sees it: sends requests and control messages down the
 * outbound channel and routes what comes back to the observer of each request.
 */
/** Everything a session needs, fixed for its life (link/session-manager.ts builds it from the Register). */
export interface ProviderSessionInit {
  handle: ProviderHandle;
  /** The stream's outbound half. */
  outbound: Channel<ConnectResponse>;
  log: Logger;
  /**
   * The provider's X25519 key (Register.encryption_public_key) requests are sealed to; empty when it
   * registered without one (plaintext dispatch, a development escape hatch the coordinator must allow).
   */
  encryptionKey: Uint8Array;
  /** The provider's P-256 key (SEC1) its response signatures must verify with; undefined without one. */
  signingKey: Uint8Array | undefined;
  /** A heartbeat was applied to the handle (its capacity may have changed). */
  onHeartbeat: () => void;
  /**
   * What marking the provider untrusted does beyond telling it: hands the finding to trust management
   * and evicts the session, so its in-flight requests fail over.
   */
  onUntrusted: (code: string, message: string) => void;
  /** Receives the provider's answers to attestation challenges; without it they are ignored. */
  onAttestationResponse?: ((response: AttestationResponse) => void) | undefined;
}

/**
 * One provider's stream as the coordinator sees it: sends requests and control messages down the
 * outbound channel and routes what comes back to the observer of each request.
 */
export class ProviderSession {
  readonly handle: ProviderHandle;
  /** See ProviderSessionInit. */
  readonly encryptionKey: Uint8Array;
  /** See ProviderSessionInit. */
  readonly signingKey: Uint8Array | undefined;
  private readonly calls = new Map<string, Call>();
  private readonly loadOps = new Map<string, (s: LoadModelStatus) => void>();
  private closedReason: string | undefined;
  private readonly outbound: Channel<ConnectResponse>;
  private readonly log: Logger;
  private readonly onHeartbeat: () => void;
  private readonly onUntrusted: (code: string, message: string) => void;
  private readonly onAttestationResponse: ((response: AttestationResponse) => void) | undefined;

  constructor(init: ProviderSessionInit) {
    this.handle = init.handle;
    this.outbound = init.outbound;
    this.log = init.log;
    this.encryptionKey = init.encryptionKey;
    this.signingKey = init.signingKey;
    this.onHeartbeat = init.onHeartbeat;
    this.onUntrusted = init.onUntrusted;
    this.onAttestationResponse = init.onAttestationResponse;
  }

  get activeCalls(): number {
    return this.calls.size;
  }

  get isClosed(): boolean {
    return this.closedReason !== undefined;
  }

  send(message: ConnectResponse): boolean {
    return this.outbound.offer(message);
  }

  /**
   * Sends an InferenceRequest; returns false (and calls nothing) when the session is closed. With a
   * `key` (the request's box key, from sealRequest) every chunk must come back sealed with it; the
   * session wipes the key when the request ends.
   */
  dispatch(request: InferenceRequestInit, observer: CallObserver, key?: BoxKey): boolean {
    const requestId = request.requestId ?? "";
    if (this.isClosed || this.calls.has(requestId)) return false;
    this.calls.set(requestId, { observer, nextSequence: 0n, key });
    const sent = this.send(
      create(ConnectResponseSchema, { message: { case: "inferenceRequest", value: request } }),
    );
    if (!sent) this.calls.delete(requestId);
    return sent;
  }

  /** Stops a request: forgets its observer and tells the provider to free the slot. */
  cancel(requestId: string, reason: string): void {
    const call = this.calls.get(requestId);
    if (!call) return;
    this.forget(requestId, call);
    this.send(create(ConnectResponseSchema, { message: { case: "cancel", value: { requestId, reason } } }));
  }

  /**
   * The provider broke a trust rule (a plaintext or unopenable chunk, a forged response signature):
   * tells it why (RuntimeStatus, not routable, with the reason code) and hands it to onUntrusted,
   * which evicts it; its in-flight requests fail over to other providers.
   */
  markUntrusted(code: string, message: string): void {
    if (this.isClosed) return;
    this.log.warn({ providerId: this.handle.id, code, reason: message }, "provider marked untrusted");
    this.handle.markDraining(); // no new work, whatever onUntrusted does
    this.send(
      create(ConnectResponseSchema, {
        message: {
          case: "runtimeStatus",
          value: { trustLevel: this.handle.trustLevel, routable: false, reasons: [{ code, message }] },
        },
      }),
    );
    this.onUntrusted(code, message);
  }

  /** Asks the provider to stop taking work, finish what it has and reconnect. */
  drain(reason: string, deadlineMs: number): void {
    this.handle.markDraining();
    this.send(create(ConnectResponseSchema, { message: { case: "drain", value: { reason, deadlineMs } } }));
  }

  /** Asks the provider to load a model; resolves with its final status. */
  loadModel(modelId: string, operationId: string, timeoutMs: number): Promise<LoadModelStatus> {
    return this.modelOperation("loadModel", modelId, operationId, timeoutMs);
  }

  unloadModel(modelId: string, operationId: string, timeoutMs: number): Promise<LoadModelStatus> {
    return this.modelOperation("unloadModel", modelId, operationId, timeoutMs);
  }

  /** Routes one message from the provider. Register never arrives here (the service consumed it). */
  receive(message: ConnectRequest): void {
    const m = message.message;
    switch (m.case) {
      case "heartbeat":
        this.handle.applyHeartbeat(m.value, Date.now());
        this.onHeartbeat();
        return;
      case "inferenceAccepted":
        this.calls.get(m.value.requestId)?.observer.accepted();
        return;
      case "inferenceChunk": {
        const call = this.calls.get(m.value.requestId);
        if (!call) return; // cancelled or finished: chunks in flight are expected
        const requestId = m.value.requestId;
        if (m.value.sequence !== call.nextSequence) {
          this.violation(
            requestId,
            call,
            `chunk sequence ${m.value.sequence}, expected ${call.nextSequence}`,
          );
          return;
        }
        call.nextSequence++;
        // A relayed call's chunks go on as the provider sent them: the key is another replica's.
        if (call.observer.relay) {
          call.observer.relay(m.value);
          return;
        }
        const opened = openChunk(call.key, m.value.payload);
        if ("untrusted" in opened) {
          this.untrusted(requestId, call, opened.untrusted, opened.message);
          return;
        }
        if ("violation" in opened) {
          this.violation(requestId, call, opened.violation);
          return;
        }
        call.observer.chunk(opened.chunk);
        return;
      }
      case "inferenceComplete": {
        const call = this.calls.get(m.value.requestId);
        if (!call) return;
        this.forget(m.value.requestId, call);
        call.observer.complete(m.value);
        return;
      }
      case "inferenceError": {
        const call = this.calls.get(m.value.requestId);
        if (!call) return;
        this.forget(m.value.requestId, call);
        call.observer.error(m.value);
        return;
      }
      case "loadModelStatus": {
        const s = m.value;
        this.log.info(
          { providerId: this.handle.id, model: s.modelId, state: LoadModelState[s.state], reason: s.reason },
          "model operation status",
        );
        if (s.state === LoadModelState.SUCCEEDED || s.state === LoadModelState.FAILED) {
          this.loadOps.get(s.operationId)?.(s);
        }
        return;
      }
      case "attestationResponse":
        if (this.onAttestationResponse) this.onAttestationResponse(m.value);
        else this.log.debug({ providerId: this.handle.id }, "unsolicited attestation response ignored");
        return;
      case "register":
        this.log.warn({ providerId: this.handle.id }, "second Register on one stream ignored");
        return;
      default:
        return;
    }
  }

  /** Fails every in-flight request (they may be retried elsewhere) and refuses new ones. */
  close(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    const calls = [...this.calls.values()];
    this.calls.clear();
    for (const call of calls) {
      call.key?.wipe();
      call.observer.lost(reason);
    }
    for (const resolve of this.loadOps.values()) {
      resolve({
        state: LoadModelState.FAILED,
        reason: `provider disconnected: ${reason}`,
      } as LoadModelStatus);
    }
    this.loadOps.clear();
  }

  /** A request ends on this side: its box key is wiped. */
  private forget(requestId: string, call: Call): void {
    this.calls.delete(requestId);
    call.key?.wipe();
  }

  /** A protocol violation fails the request over (not a trust matter: e.g. a bug). */
  private violation(requestId: string, call: Call, why: string): void {
    this.log.warn({ providerId: this.handle.id, requestId }, `protocol violation: ${why}`);
    this.cancel(requestId, "protocol_violation");
    call.observer.lost(`protocol violation: ${why}`);
  }

  /** An encryption violation fails the request over and marks the provider untrusted. */
  private untrusted(requestId: string, call: Call, code: string, message: string): void {
    this.cancel(requestId, code);
    call.observer.lost(`provider untrusted: ${code}`);
    this.markUntrusted(code, message);
  }

  private modelOperation(
    kind: "loadModel" | "unloadModel",
    modelId: string,
    operationId: string,
    timeoutMs: number,
  ): Promise<LoadModelStatus> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.loadOps.delete(operationId);
        resolve({
          state: LoadModelState.FAILED,
          reason: "timed out",
          modelId,
          operationId,
        } as LoadModelStatus);
      }, timeoutMs);
      this.loadOps.set(operationId, (s) => {
        clearTimeout(timer);
        this.loadOps.delete(operationId);
        resolve(s);
      });
      const sent = this.send(
        create(ConnectResponseSchema, { message: { case: kind, value: { modelId, operationId } } }),
      );
      if (!sent)
        this.loadOps.get(operationId)?.({
          state: LoadModelState.FAILED,
          reason: "stream closed",
        } as LoadModelStatus);
    });
  }
}
