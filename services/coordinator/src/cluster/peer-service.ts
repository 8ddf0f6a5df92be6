import { timingSafeEqual } from "node:crypto";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { Channel } from "@darkbloom/protocol";
import {
  type DrainRequest,
  type DrainResponse,
  DrainResponseSchema,
  type ForwardRequest,
  type ForwardResponse,
  ForwardResponseSchema,
  type ModelOperationRequest,
  type ModelOperationResponse,
  ModelOperationResponseSchema,
  type PeerService,
  type UntrustedRequest,
  type UntrustedResponse,
  UntrustedResponseSchema,
} from "@darkbloom/protocol/cluster/v1";
import type { InferenceChunk } from "@darkbloom/protocol/provider/v1";
import type { ModelPlacement } from "../link/model-placement.js";
import { DRAIN_DEADLINE_MS, runModelOperation } from "../link/provider-commands.js";
import type { CallObserver } from "../link/provider-session.js";
import type { SessionManager } from "../link/session-manager.js";
import type { Logger } from "../log.js";
import type { Router } from "../routing/router.js";

export interface PeerServiceDeps {
  /** The cluster's peer credential; undefined: this replica refuses every peer call. */
  peerToken: string | undefined;
  /**
   * The credential being rotated out, accepted beside peerToken (never sent by this replica's own
   * clients first), so that replicas started before a rotation are served during the roll.
   */
  previousPeerToken?: string | undefined;
  sessions: SessionManager;
  router: Router;
  log: Logger;
  /** Loads and unloads models (model placement's cooldown counts an administrator's commands). */
  models?: Pick<ModelPlacement, "operate">;
  /** How long the caller has to send ForwardStart. */
  startTimeoutMs?: number;
  /** Hears each forwarded request this replica admitted or refused (metrics). */
  onForward?: ForwardObserver;
}

/** Hears a forwarded request's admission: "refused" when the provider had left or had no free slot. */
export type ForwardObserver = (result: "admitted" | "refused", model: string) => void;

/** The Authorization header a replica sends to its peers. */
export function peerAuthorization(token: string): string {
  return `Bearer ${token}`;
}

/**
 * The holder's half of forwarding (cluster/v1 PeerService.Forward): admits a request another
 * replica routed to a provider whose stream this replica holds, dispatches it on that stream and
 * relays what the provider sends, unopened (the caller keeps the request's box key). The lease on
 * the provider's slot is held for the call's life; the call ending in any way but the request's own
 * end (the caller cancelled, failed or vanished) cancels the provider's work.
 */
export function createPeerService(deps: PeerServiceDeps): ServiceImpl<typeof PeerService> {
  // Without a current token nothing is accepted, a previous one included.
  const accepted =
    deps.peerToken === undefined
      ? undefined
      : [deps.peerToken, deps.previousPeerToken]
          .filter((t): t is string => t !== undefined)
          .map((t) => Buffer.from(peerAuthorization(t)));
  const startTimeoutMs = deps.startTimeoutMs ?? 10_000;
  return {
    async *forward(
      requests: AsyncIterable<ForwardRequest>,
      context: HandlerContext,
    ): AsyncIterable<ForwardResponse> {
      authorize(context);
      const inbound = requests[Symbol.asyncIterator]();
      const first = await withTimeout(inbound.next(), startTimeoutMs);
      if (first.done || first.value.message.case !== "start" || !first.value.message.value.request) {
        throw new ConnectError("the first message must be ForwardStart with a request", Code.InvalidArgument);
      }
      const { providerId, request } = first.value.message.value;
      const requestId = request.requestId;
      const refuse = (message: string, code: Code) => {
        deps.onForward?.("refused", request.model);
        return new ConnectError(message, code);
      };
      const session = deps.sessions.get(providerId);
      if (!session || session.isClosed) {
        throw refuse(`provider ${providerId} is not connected here`, Code.NotFound);
      }
      const lease = deps.router.leaseOn(session.handle);
      if (!lease) throw refuse(`provider ${providerId} has no free slot`, Code.ResourceExhausted);

      const out = new Channel<ForwardResponse>();
      let ended = false; // the request ended on the provider's side (its terminal message relayed)
      // Chunks that arrive together (an engine's burst, one socket read) go out as one message: the
      // hop's cost is per message, not per byte. The first of a burst goes at once (no added
      // latency); those arriving before the event loop's next turn follow it in one message.
      let pending: InferenceChunk[] = [];
      let burst = false;
      const flush = () => {
        if (pending.length === 0) return;
        const chunks = pending;
        pending = [];
        out.offer(create(ForwardResponseSchema, { message: { case: "chunks", value: { chunks } } }));
      };
      const send = (message: DownMessage) => {
        flush();
        out.offer(create(ForwardResponseSchema, { message }));
      };
      const end = (message: DownMessage) => {
        ended = true;
        send(message);
        out.close();
      };
      const observer: CallObserver = {
        accepted: () => send({ case: "accepted", value: { requestId } }),
        chunk: () => undefined, // never called: relay() takes the chunks
        relay: (chunk) => {
          pending.push(chunk);
          if (burst) return; // goes with the rest of the burst, at the event loop's next turn
          flush();
          burst = true;
          setImmediate(() => {
            burst = false;
            flush();
          });
        },
        complete: (message) => end({ case: "complete", value: message }),
        error: (message) => end({ case: "error", value: message }),
        lost: (reason) => end({ case: "lost", value: { reason } }),
      };
      const rows = session.handle.inFlight;
      session.handle.noteUse(request.model);
      if (!session.dispatch(request, observer)) {
        lease.release();
        throw refuse(`provider ${providerId}'s stream closed`, Code.Unavailable);
      }
      deps.onForward?.("admitted", request.model);
      send({ case: "admitted", value: { rows } });
      const stop = (reason: string) => {
        if (ended) return;
        ended = true;
        if (reason === FORWARDER_GONE) {
          deps.log.info(
            { providerId, requestId },
            "forwarded request cancelled: the replica that sent it went away",
          );
        }
        session.cancel(requestId, reason);
        out.close();
      };
      const onAbort = () => stop(FORWARDER_GONE);
      context.signal.addEventListener("abort", onAbort, { once: true });
      // What the caller says after the start: a cancel.
      void (async () => {
        try {
          for (;;) {
            const r = await inbound.next();
            if (r.done) return;
            const m = r.value.message;
            if (m.case === "cancel") stop(m.value.reason || "cancelled");
          }
        } catch {
          stop(FORWARDER_GONE);
        }
      })();
      try {
        yield* out;
      } finally {
        context.signal.removeEventListener("abort", onAbort);
        stop(FORWARDER_GONE);
        lease.release();
      }
    },

    async untrusted(request: UntrustedRequest, context: HandlerContext): Promise<UntrustedResponse> {
      authorize(context);
      if (!request.code || request.code.length > 64 || request.message.length > 1000) {
        throw new ConnectError(
          "a finding needs a code (at most 64 characters) and a message (at most 1000)",
          Code.InvalidArgument,
        );
      }
      const session = deps.sessions.get(request.providerId);
      if (!session) {
        throw new ConnectError(`provider ${request.providerId} is not connected here`, Code.NotFound);
      }
      deps.log.info({ providerId: request.providerId, code: request.code }, "trust finding from a peer");
      session.markUntrusted(request.code, request.message);
      return create(UntrustedResponseSchema);
    },

    async drain(request: DrainRequest, context: HandlerContext): Promise<DrainResponse> {
      authorize(context);
      const session = deps.sessions.get(request.providerId);
      if (!session) {
        throw new ConnectError(`provider ${request.providerId} is not connected here`, Code.NotFound);
      }
      deps.log.info({ providerId: request.providerId }, "provider drained through a peer");
      session.drain(request.reason.slice(0, 200) || "drained by an administrator", DRAIN_DEADLINE_MS);
      return create(DrainResponseSchema);
    },

    async modelOperation(
      request: ModelOperationRequest,
      context: HandlerContext,
    ): Promise<ModelOperationResponse> {
      authorize(context);
      const session = deps.sessions.get(request.providerId);
      if (!session) {
        throw new ConnectError(`provider ${request.providerId} is not connected here`, Code.NotFound);
      }
      const kind = request.unload ? "unload" : "load";
      deps.log.info(
        { providerId: request.providerId, model: request.modelId, kind },
        "model operation through a peer",
      );
      const operate = deps.models?.operate.bind(deps.models) ?? runModelOperation;
      return create(ModelOperationResponseSchema, await operate(session, request.modelId, kind));
    },
  };

  /**
   * Refuses a call without the cluster's peer token or the previous one (every call, where none is
   * configured). Both are compared every time, in constant time: which one matched, or that the
   * first did, must not show in the answer's timing.
   */
  function authorize(context: HandlerContext): void {
    if (accepted === undefined) {
      throw new ConnectError("this coordinator takes no peer calls (no peer token)", Code.Unimplemented);
    }
    const presented = Buffer.from(context.requestHeader.get("authorization") ?? "");
    let match = false;
    for (const expected of accepted) {
      if (presented.length === expected.length && timingSafeEqual(presented, expected)) match = true;
    }
    if (!match) throw new ConnectError("a peer call needs the cluster's peer token", Code.Unauthenticated);
  }
}

/** The cancel reason when the forwarding replica's call ends without its request's end. */
const FORWARDER_GONE = "forwarder_gone";

type DownMessage = MessageInitShape<typeof ForwardResponseSchema>["message"];

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new ConnectError(`no ForwardStart within ${ms} ms`, Code.DeadlineExceeded)),
      ms,
    );
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
