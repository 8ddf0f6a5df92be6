import type { ConnectRequest, Endpoint, RegisterAck } from "@darkbloom/protocol/provider/v1";
import { type Dialed, Outbound } from "@darkbloom/protocol/provider-client";
import type { BoxKey } from "@darkbloom/protocol/sealed-box";
import type { DisconnectReason } from "./scripted-options.js";

/** Queued outbound messages above which zero-delay generation waits for the stream to catch up... */
const OUTBOUND_HIGH_WATER = 512;
/** ...until this many are left. */
const OUTBOUND_LOW_WATER = 128;
/** Event-loop turns a scripted disconnect waits, once the outbound queue is empty, for HTTP/2 to write it. */
const FLUSH_TURNS = 3;

/** A request holding a batch slot of a session. */
export interface ActiveRequest {
  stopped: boolean;
  /** Ends the pause (delay or stall) the request is in, if any. */
  wake: (() => void) | undefined;
  /** The request's box key (sealed requests): chunks are sealed with it; wiped when the request ends. */
  key: BoxKey | undefined;
  /** SHA-256 of the request body as opened (what the response signature covers). */
  requestSha256: Uint8Array;
  /** InferenceRequest.model (what the response signature covers). */
  model: string;
  endpoint: Endpoint;
  /** An embeddings request's inputs, in order. */
  inputs: string[];
}

export interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

/** One stream to the coordinator, from Register to its end. */
export class Session {
  readonly outbound = new Outbound();
  readonly active = new Map<string, ActiveRequest>();
  readonly registered = deferred<RegisterAck>();
  ack: RegisterAck | undefined;
  draining = false;
  /** Local work stopped: nothing more is produced for this session. */
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
    this.outbound.send(message);
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

  stopHeartbeats(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  /** Frees a request's slot (if it still holds it) and ends a drain that waited for it. */
  release(requestId: string, active: ActiveRequest): void {
    if (this.active.get(requestId) !== active) return;
    this.active.delete(requestId);
    this.closeIfDrained();
  }

  /** A draining session with nothing in flight ends its side of the stream. */
  closeIfDrained(): void {
    if (!this.draining || this.active.size > 0) return;
    this.stopHeartbeats();
    this.outbound.close();
  }

  /** Stops the session's local work (heartbeats, in-flight requests); nothing more is produced for it. */
  quiesce(): void {
    if (this.halted) return;
    this.halted = true;
    this.stopHeartbeats();
    for (const active of this.active.values()) stopRequest(active);
    this.active.clear();
  }

  /**
   * A scripted "disconnect": the connection drops like a killed process's, but only once what the
   * provider already produced is on the wire, so the coordinator sees the tokens sent before it.
   */
  async drop(): Promise<void> {
    this.ending ??= "disconnect";
    this.quiesce();
    while (this.outbound.size > 0) await yieldToEventLoop();
    for (let turn = 0; turn < FLUSH_TURNS; turn++) await yieldToEventLoop();
    this.dialed.kill();
  }

  private async pollQueue(): Promise<void> {
    while (this.outbound.size > OUTBOUND_LOW_WATER && !this.halted) await yieldToEventLoop();
    this.caughtUp = undefined;
  }
}

export function stopRequest(active: ActiveRequest): void {
  active.stopped = true;
  const wake = active.wake;
  active.wake = undefined;
  wake?.();
}

/** Waits ms, or less when the request is stopped meanwhile. */
export function pause(active: ActiveRequest, ms: number): Promise<void> {
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
export function stall(active: ActiveRequest): Promise<void> {
  if (active.stopped) return Promise.resolve();
  return new Promise((resolve) => {
    active.wake = resolve;
  });
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
