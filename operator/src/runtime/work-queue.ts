/**
 * The controllers' work queue, with client-go's workqueue semantics: a key is queued at most once
 * however many events name it, at most one reconcile of a key runs at a time (an event that arrives
 * during a reconcile queues the key again for after it), failures are retried with a per-key
 * exponential backoff, and a reconcile may ask to run again after a delay (polling what no watch
 * reports, such as a coordinator's admin API).
 */

export interface ReconcileResult {
  /** Reconcile again after this many milliseconds even if nothing changes. */
  requeueAfterMs?: number;
}

export type Reconcile = (key: string) => Promise<ReconcileResult | undefined>;

export interface WorkQueueOptions {
  /** Reconciles that may run at once (of different keys). */
  concurrency?: number;
  /** First retry delay after a failure; doubled per consecutive failure of the key. */
  baseBackoffMs?: number;
  /** Longest retry delay. */
  maxBackoffMs?: number;
  /** Told after every reconcile (metrics). */
  onResult?: (outcome: "success" | "error" | "requeue", seconds: number, error?: unknown) => void;
}

export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  private readonly running = new Set<string>();
  /** Keys added while their reconcile ran: queued again when it ends. */
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly concurrency: number;
  private readonly baseBackoffMs: number;
  private readonly maxBackoffMs: number;
  private stopped = false;

  constructor(
    private readonly reconcile: Reconcile,
    private readonly options: WorkQueueOptions = {},
  ) {
    this.concurrency = options.concurrency ?? 2;
    this.baseBackoffMs = options.baseBackoffMs ?? 200;
    this.maxBackoffMs = options.maxBackoffMs ?? 60_000;
  }

  /** Keys waiting (not counting those running). */
  get depth(): number {
    return this.queue.length;
  }

  add(key: string): void {
    if (this.stopped) return;
    if (this.running.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.queue.push(key);
    this.pump();
  }

  /** Adds the key after a delay; an earlier pending delay for it wins (the key runs once). */
  addAfter(key: string, delayMs: number): void {
    if (this.stopped) return;
    if (this.timers.has(key)) return;
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, delayMs);
    timer.unref();
    this.timers.set(key, timer);
  }

  /** Stops taking work and waits for the reconciles that are running. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.queue.length = 0;
    this.queued.clear();
    await Promise.all(this.inFlight);
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.concurrency && this.queue.length > 0) {
      const key = this.queue.shift() as string;
      this.queued.delete(key);
      this.running.add(key);
      const done = this.run(key).finally(() => {
        this.inFlight.delete(done);
        this.running.delete(key);
        if (this.dirty.delete(key)) this.add(key);
        this.pump();
      });
      this.inFlight.add(done);
    }
  }

  private async run(key: string): Promise<void> {
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    try {
      const result = await this.reconcile(key);
      this.failures.delete(key);
      if (result?.requeueAfterMs !== undefined) {
        this.options.onResult?.("requeue", seconds());
        this.addAfter(key, result.requeueAfterMs);
      } else {
        this.options.onResult?.("success", seconds());
      }
    } catch (error) {
      const failures = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, failures);
      this.options.onResult?.("error", seconds(), error);
      this.addAfter(key, this.backoff(failures));
    }
  }

  /** Exponential with full jitter over its upper half, so keys failing together spread out. */
  private backoff(failures: number): number {
    const ceiling = Math.min(this.maxBackoffMs, this.baseBackoffMs * 2 ** Math.min(failures - 1, 20));
    return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
  }
}
