import type { Drain } from "@darkbloom/protocol/provider/v1";
import type { Logger } from "pino";
import { Refusals } from "./errors.js";
import type { Heartbeats } from "./heartbeats.js";
import type { RequestServer } from "./request-server.js";
import type { Session } from "./session.js";

/** Time a stopping link gives the coordinator to end the stream after the provider ended its side. */
const STOP_GRACE_MS = 2_000;

/**
 * Ending a stream without losing work: the coordinator's Drain (its shutdown or a rollout) and the
 * daemon's own graceful stop both refuse new requests (503, retryable), say so in a heartbeat, let
 * what is in flight finish until a deadline, fail the rest, then end the provider's side of the
 * stream. After a Drain the link reconnects; after stop() it does not.
 */
export class Draining {
  constructor(
    private readonly requests: RequestServer,
    private readonly heartbeats: Heartbeats,
    private readonly log: Logger,
  ) {}

  /** The coordinator asked for a drain: the stream ends once in-flight work is done or the deadline passes. */
  onDrain(session: Session, drain: Drain): void {
    this.log.info(
      { reason: drain.reason, deadlineMs: drain.deadlineMs, inFlight: session.active.size },
      "drain requested",
    );
    session.draining = true;
    session.drainedByCoordinator = true;
    this.heartbeats.send(session);
    if (session.active.size === 0) {
      this.finish(session);
      return;
    }
    if (drain.deadlineMs > 0) {
      session.drainTimer = setTimeout(() => {
        this.requests.failAll(session, (active) => Refusals.shutDown(active.sent));
        this.finish(session);
      }, drain.deadlineMs);
    }
  }

  /** The session's last request left: a drain the coordinator asked for can end the stream now. */
  onIdle(session: Session): void {
    if (session.drainedByCoordinator) this.finish(session);
  }

  /**
   * The daemon is stopping (SIGTERM): drains the session for up to `deadlineMs`, ends the stream and
   * resolves once it is closed (forcing it closed if the coordinator does not end its side in time).
   */
  async stop(session: Session, deadlineMs: number): Promise<void> {
    session.draining = true;
    if (session.ack) this.heartbeats.send(session);
    await session.waitForIdle(deadlineMs);
    this.requests.failAll(session, (active) => Refusals.shutDown(active.sent));
    session.stopHeartbeats();
    session.outbound.close();
    const grace = setTimeout(() => session.dialed.close(), STOP_GRACE_MS);
    await session.done;
    clearTimeout(grace);
  }

  /** Ends our side of a drained stream; the coordinator then ends its side and the link reconnects. */
  private finish(session: Session): void {
    clearTimeout(session.drainTimer);
    session.stopHeartbeats();
    session.outbound.close();
  }
}
