import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { Channel } from "@darkbloom/protocol";
import {
  type ChunkPayload,
  type ConnectRequest,
  type ConnectResponse,
  ConnectResponseSchema,
  type InferenceComplete,
  type InferenceError,
  type InferenceRequestSchema,
  LoadModelState,
  type LoadModelStatus,
} from "@darkbloom/protocol/provider/v1";
import type { Logger } from "../log.js";
import type { ProviderHandle } from "../routing/provider-handle.js";

/** Receives what a provider sends about one dispatched request. Exactly one terminal call happens. */
export interface CallObserver {
  accepted(): void;
  chunk(payload: ChunkPayload): void;
  complete(message: InferenceComplete): void;
  error(message: InferenceError): void;
  /** The provider went away or broke the protocol for this request. */
  lost(reason: string): void;
}

interface Call {
  observer: CallObserver;
  nextSequence: bigint;
}

export type InferenceRequestInit = MessageInitShape<typeof InferenceRequestSchema>;

/**
 * One provider's stream as the coordinator sees it: sends requests and control messages down the
 * outbound channel and routes what comes back to the observer of each request.
 */
export class ProviderSession {
  private readonly calls = new Map<string, Call>();
  private readonly loadOps = new Map<string, (s: LoadModelStatus) => void>();
  private closedReason: string | undefined;

  constructor(
    readonly handle: ProviderHandle,
    private readonly outbound: Channel<ConnectResponse>,
    private readonly log: Logger,
    private readonly onHeartbeat: () => void,
  ) {}

  get activeCalls(): number {
    return this.calls.size;
  }

  get isClosed(): boolean {
    return this.closedReason !== undefined;
  }

  send(message: ConnectResponse): boolean {
    return this.outbound.offer(message);
  }

  /** Sends an InferenceRequest; returns false (and calls nothing) when the session is closed. */
  dispatch(request: InferenceRequestInit, observer: CallObserver): boolean {
    const requestId = request.requestId ?? "";
    if (this.isClosed || this.calls.has(requestId)) return false;
    this.calls.set(requestId, { observer, nextSequence: 0n });
    const sent = this.send(
      create(ConnectResponseSchema, { message: { case: "inferenceRequest", value: request } }),
    );
    if (!sent) this.calls.delete(requestId);
    return sent;
  }

  /** Stops a request: forgets its observer and tells the provider to free the slot. */
  cancel(requestId: string, reason: string): void {
    if (!this.calls.delete(requestId)) return;
    this.send(create(ConnectResponseSchema, { message: { case: "cancel", value: { requestId, reason } } }));
  }

  /** Asks the provider to stop taking work, finish what it has and reconnect. */
  drain(reason: string, deadlineMs: number): void {
    this.handle.draining = true;
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
        if (m.value.sequence !== call.nextSequence || m.value.payload.case !== "plaintext") {
          const why =
            m.value.payload.case !== "plaintext"
              ? "sealed chunk on a plaintext dispatch"
              : `chunk sequence ${m.value.sequence}, expected ${call.nextSequence}`;
          this.log.warn(
            { providerId: this.handle.id, requestId: m.value.requestId },
            `protocol violation: ${why}`,
          );
          this.cancel(m.value.requestId, "protocol_violation");
          call.observer.lost(`protocol violation: ${why}`);
          return;
        }
        call.nextSequence++;
        call.observer.chunk(m.value.payload.value);
        return;
      }
      case "inferenceComplete": {
        const call = this.calls.get(m.value.requestId);
        if (!call) return;
        this.calls.delete(m.value.requestId);
        call.observer.complete(m.value);
        return;
      }
      case "inferenceError": {
        const call = this.calls.get(m.value.requestId);
        if (!call) return;
        this.calls.delete(m.value.requestId);
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
        // Challenges are not issued yet; an unsolicited answer is ignored.
        this.log.debug({ providerId: this.handle.id }, "unsolicited attestation response ignored");
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
    for (const call of calls) call.observer.lost(reason);
    for (const resolve of this.loadOps.values()) {
      resolve({
        state: LoadModelState.FAILED,
        reason: `provider disconnected: ${reason}`,
      } as LoadModelStatus);
    }
    this.loadOps.clear();
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
