/**
 * A keyed work queue in the manner of client-go's: a key is never synced by two workers at once, a key
 * added while it is being synced is synced again afterwards, failures are retried with exponential
 * backoff, and every key is resynced periodically so that a lost event heals by itself.
 */

export type SyncResult = undefined | { requeueAfterMs: number };

export class WorkQueue {
  private readonly queued = new Set<string>();
  private readonly active = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly timers = new Map<string, { timer: NodeJS.Timeout; due: number }>();
  private readonly failures = new Map<string, number>();
  private running = 0;
  private stopped = false;
  private readonly idleWaiters: (() => void)[] = [];

  constructor(
    private readonly name: string,
    private readonly sync: (key: string) => Promise<SyncResult>,
    private readonly log: (line: string) => void,
    private readonly workers = 4,
  ) {}

  add(key: string): void {
    if (this.stopped) return;
    if (this.active.has(key)) {
      this.dirty.add(key);
      return;
    }
    this.queued.add(key);
    this.pump();
  }

  /** Adds the key after a delay; an earlier pending delay for the key wins. */
  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const due = Date.now() + ms;
    const existing = this.timers.get(key);
    if (existing) {
      if (existing.due <= due) return;
      clearTimeout(existing.timer);
    }
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, ms);
    this.timers.set(key, { timer, due });
  }

  stop(): Promise<void> {
    this.stopped = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.queued.clear();
    if (this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
    while (!this.stopped && this.running < this.workers) {
      const key = this.queued.values().next().value;
      if (key === undefined) return;
      this.queued.delete(key);
      this.active.add(key);
      this.running++;
      void this.process(key);
    }
  }

  private async process(key: string): Promise<void> {
    try {
      const result = await this.sync(key);
      this.failures.delete(key);
      if (result) this.addAfter(key, result.requeueAfterMs);
    } catch (err) {
      const failures = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, failures);
      const delay = Math.min(50 * 2 ** (failures - 1), 5000);
      if (!this.stopped) this.log(`${this.name} ${key}: ${(err as Error).message} (retry in ${delay} ms)`);
      this.addAfter(key, delay);
    } finally {
      this.active.delete(key);
      this.running--;
      if (this.dirty.delete(key)) this.add(key);
      if (this.stopped && this.running === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
      this.pump();
    }
  }
}
