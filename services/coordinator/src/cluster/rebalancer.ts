import type pg from "pg";
import type { SessionManager } from "../link/session-manager.js";
import type { Logger } from "../log.js";
import type { DirectoryReader } from "./directory-reader.js";

/** Drain reason a rebalanced provider is told. */
export const REBALANCE_REASON = "rebalance";
/** How long a rebalanced provider may take to finish (it is idle when asked). */
const REBALANCE_DRAIN_MS = 30_000;

export interface RebalancerOptions {
  /** Period between checks (each drains at most one provider). */
  intervalMs: number;
  /** A replica whose liveness row is older than this does not count (as for the directory). */
  staleMs: number;
}

/**
 * Gentle rebalancing of provider streams among replicas. Providers connect wherever the Service
 * sends them, so a replica that joined (or came back from a restart) starts with none while another
 * holds them all. Forwarding makes that correct but not cheap: every request for the lone holder's
 * providers crosses a hop. Every interval, a replica holding more than its share (the cluster's
 * providers over its live replicas, rounded up) asks one idle provider to drain: it has nothing in
 * flight (never a request cut), reconnects, and behind a Service lands on any replica, so the
 * holdings even out over a few intervals without a thundering herd.
 */
export class Rebalancer {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly sessions: SessionManager,
    private readonly reader: DirectoryReader,
    private readonly options: RebalancerOptions,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (this.options.intervalMs <= 0) return;
    this.timer = setInterval(() => {
      this.running ??= this.tick()
        .catch((e: Error) => this.log.warn({ err: e.message }, "rebalancing check failed"))
        .finally(() => {
          this.running = undefined;
        });
    }, this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  /** One check: drains one idle provider when this replica holds more than its share. */
  async tick(): Promise<string | undefined> {
    const { rows } = await this.pool.query<{ n: string }>(
      `SELECT count(*) AS n FROM coordinator_instances
        WHERE last_seen >= now() - make_interval(secs => $1::double precision / 1000)`,
      [this.options.staleMs],
    );
    const replicas = Math.max(1, Number(rows[0]?.n ?? 1));
    // Providers draining still count in the total (they are about to connect somewhere), not in
    // what this replica keeps.
    const all = this.sessions.all();
    const local = all.filter((s) => !s.handle.draining);
    const share = Math.ceil((all.length + this.reader.remote().length) / replicas);
    if (local.length <= share) return undefined;
    const idle = local.find((s) => s.activeCalls === 0 && s.handle.inFlight === 0);
    if (!idle) return undefined;
    this.log.info(
      { providerId: idle.handle.id, held: local.length, share, replicas },
      "asking an idle provider to reconnect: this replica holds more than its share",
    );
    idle.drain(REBALANCE_REASON, REBALANCE_DRAIN_MS);
    return idle.handle.id;
  }
}
