import { DEFAULT_HEARTBEAT_INTERVAL_MS } from "@darkbloom/protocol";
import {
  type Heartbeat,
  ProviderState,
  type RegisterAck,
  ThermalState,
} from "@darkbloom/protocol/provider/v1";
import { heartbeatMessage } from "@darkbloom/protocol/provider-client";
import type { Logger } from "pino";
import type { Engine, EngineStats } from "../engine/engine.js";
import { memoryPressure } from "../machine/hardware.js";
import type { LinkCounters } from "./options.js";
import type { Session } from "./session.js";

const DEFAULT_WARM_WINDOW_MS = 5 * 60_000;

export interface HeartbeatOptions {
  /** Overrides the RegisterAck's heartbeat interval. */
  intervalMs?: number | undefined;
  /** A loaded model that served a request this recently is reported warm (default 5 minutes). */
  warmWindowMs?: number | undefined;
  /** Whether the link is stopping: its heartbeats say draining. */
  stopping: () => boolean;
  /** Each heartbeat sent (the link's "heartbeat" event). */
  onSent: (heartbeat: Heartbeat) => void;
}

/**
 * The provider's heartbeats: its state, loaded and warm models, counters and the engine's live
 * stats, sent at registration, every interval after it, and whenever what they report changed
 * (a drain began, a model was loaded or unloaded). The coordinator routes on them and evicts a
 * provider that misses three.
 */
export class Heartbeats {
  /** When each model last received a request: warm means loaded and used within the window. */
  private readonly lastUsed = new Map<string, number>();

  constructor(
    private readonly engine: Engine,
    private readonly counters: LinkCounters,
    private readonly log: Logger,
    private readonly options: HeartbeatOptions,
  ) {}

  /** Notes that a request for `model` arrived. */
  used(model: string): void {
    this.lastUsed.set(model, Date.now());
  }

  /** Sends one heartbeat now and then one every interval (the ack's, unless overridden). */
  start(session: Session, ack: RegisterAck): void {
    const interval = this.options.intervalMs ?? (ack.heartbeatIntervalMs || DEFAULT_HEARTBEAT_INTERVAL_MS);
    this.send(session);
    session.heartbeat = setInterval(() => this.send(session), interval);
  }

  send(session: Session): void {
    if (session.ended || session.outbound.isClosed) return;
    const stats = engineStats(this.engine, this.log);
    const loaded = new Set(stats.loadedModels);
    const now = Date.now();
    const warmWindow = this.options.warmWindowMs ?? DEFAULT_WARM_WINDOW_MS;
    const warm = [...this.lastUsed]
      .filter(([id, at]) => loaded.has(id) && now - at <= warmWindow)
      .map(([id]) => id);
    let state = ProviderState.IDLE;
    if (session.draining || this.options.stopping()) state = ProviderState.DRAINING;
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
      if (message.message.case === "heartbeat") this.options.onSent(message.message.value);
    }
  }
}

/** The engine's stats, or idle zeros when it cannot say: a heartbeat must go out regardless. */
export function engineStats(engine: Engine, log: Logger): EngineStats {
  try {
    return engine.stats();
  } catch (error) {
    log.warn({ err: (error as Error).message }, "engine stats failed");
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
