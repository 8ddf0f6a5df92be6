/** Something that writes an SSE comment when it has been silent too long. */
export interface KeepAliveTarget {
  keepAlive(now: number): void;
}

/**
 * One timer for every open stream instead of one per stream: every half interval it asks each
 * registered stream to write a keep-alive comment if it has been silent for the interval.
 */
export class KeepAliveScheduler {
  private readonly targets = new Set<KeepAliveTarget>();
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly intervalMs: number) {}

  add(target: KeepAliveTarget): void {
    this.targets.add(target);
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), Math.max(10, this.intervalMs / 2));
      this.timer.unref();
    }
  }

  delete(target: KeepAliveTarget): void {
    this.targets.delete(target);
    if (this.targets.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  get size(): number {
    return this.targets.size;
  }

  private tick(): void {
    const now = performance.now();
    for (const t of this.targets) t.keepAlive(now);
  }
}
