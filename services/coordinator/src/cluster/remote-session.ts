import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Channel } from "@darkbloom/protocol";
import { type ForwardRequest, ForwardRequestSchema } from "@darkbloom/protocol/cluster/v1";
import { type InferenceChunk, InferenceErrorSchema } from "@darkbloom/protocol/provider/v1";
import type { BoxKey } from "@darkbloom/protocol/sealed-box";
import { openChunk } from "../link/chunk-opening.js";
import type { CallObserver, InferenceRequestInit } from "../link/provider-session.js";
import type { Logger } from "../log.js";
import type { ProviderHandle } from "../routing/provider-handle.js";
import type { DispatchTarget } from "../routing/provider-pool.js";
import type { PeerClient } from "./peer-clients.js";
import type { ForwardObserver } from "./peer-service.js";

/** One forwarded request in flight. */
interface RemoteCall {
  /** The model the request names (a metrics label). */
  model: string;
  observer: CallObserver;
  key: BoxKey | undefined;
  up: Channel<ForwardRequest>;
  abort: AbortController;
  /** Its observer heard its end (or was cancelled): nothing more reaches it. */
  done: boolean;
}

/**
 * A provider whose stream another replica holds, as the pipeline dispatches to it: each request
 * is one PeerService.Forward call to that replica. The request goes out sealed to the provider's
 * key and its chunks come back as the provider sealed them; they are opened here, with the key that
 * never left this replica, by the same code that opens a local provider's chunks. Trust findings
 * made here (an unsealed or unopenable chunk, a bad signature, a metering violation) go to the
 * holder, which untrusts and evicts the provider as it would for its own.
 */
export class RemoteProviderSession implements DispatchTarget {
  private readonly calls = new Map<string, RemoteCall>();

  constructor(
    readonly handle: ProviderHandle,
    /** The replica that holds the provider's stream. */
    private readonly peer: PeerClient,
    private readonly log: Logger,
    /** Hears whether the holder admitted or refused each forwarded request (metrics). */
    private readonly onForward?: ForwardObserver,
  ) {}

  get encryptionKey(): Uint8Array {
    return this.handle.encryptionKey;
  }

  get signingKey(): Uint8Array | undefined {
    return this.handle.signingKey;
  }

  dispatch(request: InferenceRequestInit, observer: CallObserver, key?: BoxKey): boolean {
    const requestId = request.requestId ?? "";
    if (this.handle.closed || this.calls.has(requestId)) return false;
    const up = new Channel<ForwardRequest>();
    up.push(
      create(ForwardRequestSchema, {
        message: { case: "start", value: { providerId: this.handle.id, request } },
      }),
    );
    const call: RemoteCall = {
      model: request.model ?? "",
      observer,
      key,
      up,
      abort: new AbortController(),
      done: false,
    };
    this.calls.set(requestId, call);
    void this.run(requestId, call);
    return true;
  }

  cancel(requestId: string, reason: string): void {
    const call = this.calls.get(requestId);
    if (!call) return;
    this.forget(requestId, call);
    // The holder cancels on the provider and ends the call; should the cancel not get through, the
    // call's end (closing our half, then the abort) does the same.
    call.up.offer(create(ForwardRequestSchema, { message: { case: "cancel", value: { reason } } }));
    call.up.close();
    setTimeout(() => call.abort.abort(), 5_000).unref();
  }

  markUntrusted(code: string, message: string): void {
    // No new work from this replica whatever the holder does; the directory brings its verdict.
    this.handle.markDraining();
    this.log.warn(
      { providerId: this.handle.id, code },
      "provider marked untrusted (reported to its replica)",
    );
    this.peer.untrusted({ providerId: this.handle.id, code, message }).catch((e: unknown) => {
      this.log.warn(
        { providerId: this.handle.id, code, err: (e as Error).message },
        "could not report a trust finding to the replica holding the provider",
      );
    });
  }

  /** Ends every forwarded call (the provider left the directory, or this replica stops). */
  close(reason: string): void {
    for (const [requestId, call] of [...this.calls]) {
      this.forget(requestId, call);
      call.up.close();
      call.abort.abort();
      call.observer.lost(reason);
    }
  }

  private async run(requestId: string, call: RemoteCall): Promise<void> {
    const { observer, model } = call;
    let admitted = false;
    try {
      for await (const m of this.peer.forward(call.up, call.abort.signal)) {
        if (call.done) break;
        const message = m.message;
        switch (message.case) {
          case "admitted":
            admitted = true;
            this.onForward?.("admitted", model);
            observer.admitted?.();
            break;
          case "accepted":
            observer.accepted();
            break;
          case "chunks":
            for (const chunk of message.value.chunks) {
              if (!this.deliver(requestId, call, chunk)) return;
            }
            break;
          case "complete":
            this.forget(requestId, call);
            observer.complete(message.value);
            return;
          case "error":
            this.forget(requestId, call);
            observer.error(message.value);
            return;
          case "lost":
            this.forget(requestId, call);
            observer.lost(message.value.reason);
            return;
        }
      }
      if (call.done) return;
      this.forget(requestId, call);
      observer.lost("the replica holding the provider ended the forwarded call");
    } catch (e) {
      if (call.done) return;
      this.forget(requestId, call);
      const err = ConnectError.from(e);
      if (!admitted && REFUSALS.has(err.code)) {
        this.onForward?.("refused", model);
        // Not dispatched (the directory's view was stale): routed again, as a provider refusing
        // for capacity would be.
        observer.error(
          create(InferenceErrorSchema, {
            requestId,
            code: "forward_refused",
            message: err.rawMessage,
            httpStatus: 503,
            retryable: true,
          }),
        );
        return;
      }
      observer.lost(`the replica holding the provider failed: ${err.rawMessage}`);
    } finally {
      call.up.close();
    }
  }

  /**
   * Opens one relayed chunk and hands it to the observer; false when it broke a rule (the request
   * is then cancelled and lost, and an encryption violation reported to the holder).
   */
  private deliver(requestId: string, call: RemoteCall, chunk: InferenceChunk): boolean {
    const opened = openChunk(call.key, chunk.payload);
    if ("chunk" in opened) {
      call.observer.chunk(opened.chunk);
      return !call.done;
    }
    const { observer } = call;
    this.cancel(requestId, "untrusted" in opened ? opened.untrusted : "protocol_violation");
    if ("untrusted" in opened) {
      observer.lost(`provider untrusted: ${opened.untrusted}`);
      this.markUntrusted(opened.untrusted, opened.message);
    } else {
      observer.lost(`protocol violation: ${opened.violation}`);
    }
    return false;
  }

  /** The request ends here: its observer hears nothing more, and its key is wiped. */
  private forget(requestId: string, call: RemoteCall): void {
    if (call.done) return;
    call.done = true;
    this.calls.delete(requestId);
    call.key?.wipe();
  }
}

/**
 * Answers from the holder that mean the request never reached the provider. Unauthenticated is
 * one: the holder refuses a peer token before reading the request (PeerClients has already tried
 * the other token, during a rotation), so the request is routed again rather than lost.
 */
const REFUSALS = new Set([Code.NotFound, Code.ResourceExhausted, Code.Unavailable, Code.Unauthenticated]);
