import type pg from "pg";
import type { Logger } from "../log.js";
import type { TimingPhase } from "./timing.js";

export interface TimingLogOptions {
  /** How often the buffered timings are written (ms). */
  flushIntervalMs?: number;
  /** Timings written at once; reaching it flushes early. */
  batchSize?: number;
  /** The most timings held while the database does not take them; beyond, new ones are dropped. */
  maxBuffered?: number;
  /** How long a timing is kept (days); older rows are deleted about hourly. */
  retentionDays?: number;
}

const DEFAULTS: Required<TimingLogOptions> = {
  flushIntervalMs: 1_000,
  batchSize: 500,
  maxBuffered: 20_000,
  retentionDays: 30,
};
const PRUNE_EVERY_MS = 60 * 60 * 1000;

/**
 * Writes each settled request's X-Timing phases to request_timings (migration 0012), which the
 * account's usage reads. Off the serving path: record() only buffers, and one INSERT of unnested
 * arrays writes a batch every second (or at batchSize). These are diagnostics, not money, so what
 * the database does not take is dropped with one warning per outage, never retried into growing
 * memory, and never delays a response.
 */
export class TimingLog {
  private readonly options: Required<TimingLogOptions>;
  private buffer: Array<{ requestId: string; phases: Record<TimingPhase, number> }> = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private failing = false;
  private lastPrune = 0;
  dropped = 0;

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Logger,
    options: TimingLogOptions = {},
  ) {
    this.options = { ...DEFAULTS, ...options };
  }

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.options.flushIntervalMs);
    this.timer.unref();
  }

  /** Buffers a settled request's phases (the whole request's time in `total`). */
  record(requestId: string, phases: Record<TimingPhase, number>): void {
    if (this.buffer.length >= this.options.maxBuffered) {
      this.dropped++;
      return;
    }
    this.buffer.push({ requestId, phases });
    if (this.buffer.length >= this.options.batchSize) void this.flush();
  }

  /** Writes what is buffered (one batch at a time; a flush while one runs waits for it). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.buffer.length === 0 && Date.now() - this.lastPrune < PRUNE_EVERY_MS) return;
    this.flushing = this.write().finally(() => {
      this.flushing = undefined;
    });
    await this.flushing;
  }

  /** Writes what is left, then stops. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    // One try at least (the database may be back), then as long as batches go through.
    do await this.flush();
    while (this.buffer.length > 0 && !this.failing);
  }

  private async write(): Promise<void> {
    const batch = this.buffer.splice(0, this.options.batchSize);
    try {
      if (batch.length > 0) {
        await this.pool.query(
          `INSERT INTO request_timings (request_id, phases)
           SELECT * FROM unnest($1::text[], $2::jsonb[])
           ON CONFLICT (request_id) DO NOTHING`,
          [batch.map((t) => t.requestId), batch.map((t) => JSON.stringify(t.phases))],
        );
      }
      if (Date.now() - this.lastPrune >= PRUNE_EVERY_MS) {
        this.lastPrune = Date.now();
        await this.pool.query(
          "DELETE FROM request_timings WHERE recorded_at < now() - make_interval(days => $1)",
          [this.options.retentionDays],
        );
      }
      if (this.failing) this.log.info("request timings are written again");
      this.failing = false;
    } catch (e) {
      this.dropped += batch.length;
      if (!this.failing) {
        this.log.warn({ err: e, dropped: batch.length }, "request timings could not be written; dropped");
      }
      this.failing = true;
    }
  }
}
