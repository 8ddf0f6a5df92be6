/** Thrown by Channel.push after the channel was closed. */
export class ChannelClosedError extends Error {
  constructor() {
    super("channel is closed");
    this.name = "ChannelClosedError";
  }
}

/**
 * An unbounded single-consumer queue that is also an AsyncIterable: the outbound half of a
 * bidirectional stream. Producers push without awaiting; the stream's writer pulls. close() ends the
 * iteration after the queued items; fail() ends it with an error at once.
 */
export class Channel<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private head = 0;
  private waiter: ((r: IteratorResult<T>) => void) | undefined;
  private failWaiter: ((e: unknown) => void) | undefined;
  private closed = false;
  private error: unknown;

  get isClosed(): boolean {
    return this.closed;
  }

  /** Number of items queued and not yet pulled. */
  get size(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    if (this.closed) throw new ChannelClosedError();
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      this.failWaiter = undefined;
      waiter({ value: item, done: false });
      return;
    }
    this.items.push(item);
  }

  /** Pushes unless closed; returns whether the item was queued. */
  offer(item: T): boolean {
    if (this.closed) return false;
    this.push(item);
    return true;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.size === 0) this.settleWaiter();
  }

  fail(error: unknown): void {
    if (this.closed && this.error !== undefined) return;
    this.closed = true;
    this.error = error;
    this.items.length = 0;
    this.head = 0;
    const failWaiter = this.failWaiter;
    this.waiter = undefined;
    this.failWaiter = undefined;
    failWaiter?.(error);
  }

  private settleWaiter(): void {
    const waiter = this.waiter;
    const failWaiter = this.failWaiter;
    this.waiter = undefined;
    this.failWaiter = undefined;
    if (this.error !== undefined) failWaiter?.(this.error);
    else waiter?.({ value: undefined, done: true });
  }

  private next(): Promise<IteratorResult<T>> {
    if (this.error !== undefined) return Promise.reject(this.error);
    if (this.head < this.items.length) {
      const value = this.items[this.head] as T;
      this.items[this.head] = undefined as T;
      this.head++;
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items.splice(0, this.head);
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.failWaiter = reject;
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => this.next(),
      return: () => {
        this.close();
        this.items.length = 0;
        this.head = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
      // A consumer that fails (e.g. a Connect client whose request stream broke) ends the channel.
      throw: (error: unknown) => {
        this.fail(error);
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
