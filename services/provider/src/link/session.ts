import type { RegisterAck } from "@darkbloom/protocol/provider/v1";
import { type Dialed, Outbound } from "@darkbloom/protocol/provider-client";
import type { ActiveRequest } from "./request-server.js";

/**
 * One stream to the coordinator, from Register to its end: the requests in flight on it and its
 * timers. Everything a stream carried ends with it (the coordinator fails over what was in flight),
 * so a reconnect starts from a fresh Session rather than resetting fields.
 */
export class Session {
  readonly outbound = new Outbound();
  readonly active = new Map<string, ActiveRequest>();
  ack: RegisterAck | undefined;
  /** New requests are refused (stop() or the coordinator's Drain). */
  draining = false;
  /** The coordinator sent Drain: the stream ends once nothing is in flight. */
  drainedByCoordinator = false;
  ended = false;
  heartbeat: NodeJS.Timeout | undefined;
  drainTimer: NodeJS.Timeout | undefined;
  done: Promise<void> = Promise.resolve();
  private readonly idleWaiters = new Set<() => void>();

  constructor(readonly dialed: Dialed) {}

  /** Whether the coordinator acknowledged the Register and the stream is still open. */
  get registered(): boolean {
    return this.ack !== undefined && !this.ended;
  }

  stopHeartbeats(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  /** Resolves when nothing is in flight, the stream ended, or `timeoutMs` passed. */
  waitForIdle(timeoutMs: number): Promise<void> {
    if (this.active.size === 0 || this.ended) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.idleWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.idleWaiters.add(done);
    });
  }

  /** Wakes waitForIdle() callers; called when the last request leaves and when the stream ends. */
  wakeIdleWaiters(): void {
    for (const wake of [...this.idleWaiters]) wake();
  }
}
