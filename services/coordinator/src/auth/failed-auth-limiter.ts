import { type ApiError, rateLimited } from "../errors/index.js";
import { addressKey } from "../http/client-address.js";

export interface FailedAuthLimit {
  /** Failed look-ups an address earns back per second; 0 disables the limit. */
  perSecond: number;
  /** Failed look-ups an address may make in a burst. */
  burst: number;
  /** Addresses remembered at once; past it the one that failed least recently is forgotten. */
  maxAddresses: number;
}

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/**
 * Per-address token buckets for failed credential checks (API keys, the admin key, the metrics
 * token). A check that may fail takes a token before it costs anything (a database query), so one
 * address can have at most `burst` such checks in flight or failed in a row; a check that succeeds
 * gives its token back. An address with no token left gets 429 with Retry-After.
 *
 * IPv6 addresses are counted per /64, the block one subscriber usually holds; IPv4-mapped IPv6
 * addresses as the IPv4 address. The table is an LRU of at most `maxAddresses` entries, so a flood
 * from many addresses costs bounded memory (a forgotten address starts again with a full bucket).
 */
export class FailedAuthLimiter {
  /** Insertion order is recency: the first entry failed least recently. */
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    readonly limit: FailedAuthLimit,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get enabled(): boolean {
    return this.limit.perSecond > 0;
  }

  /** Addresses currently remembered (tests, metrics of the table's size). */
  get size(): number {
    return this.buckets.size;
  }

  /** Spends one attempt for `address`; throws 429 when it has none left. */
  take(address: string): void {
    if (!this.enabled) return;
    const key = addressKey(address);
    const bucket = this.refill(key);
    if (bucket.tokens < 1) throw this.exhausted(bucket);
    bucket.tokens -= 1;
    // Most recently failing last: the LRU forgets the first entries.
    this.buckets.delete(key);
    this.buckets.set(key, bucket);
    while (this.buckets.size > this.limit.maxAddresses) {
      const oldest = this.buckets.keys().next().value as string;
      this.buckets.delete(oldest);
    }
  }

  /** Gives back the attempt a successful check took. */
  refund(address: string): void {
    if (!this.enabled) return;
    const key = addressKey(address);
    const bucket = this.buckets.get(key);
    if (!bucket) return;
    this.refill(key);
    bucket.tokens = Math.min(this.limit.burst, bucket.tokens + 1);
    // A full bucket says nothing about the address: forget it.
    if (bucket.tokens >= this.limit.burst) this.buckets.delete(key);
  }

  private refill(key: string): Bucket {
    const t = this.now();
    const bucket = this.buckets.get(key);
    if (!bucket) return { tokens: this.limit.burst, updatedAt: t };
    bucket.tokens = Math.min(
      this.limit.burst,
      bucket.tokens + ((t - bucket.updatedAt) / 1000) * this.limit.perSecond,
    );
    bucket.updatedAt = t;
    return bucket;
  }

  private exhausted(bucket: Bucket): ApiError {
    const wait = (1 - bucket.tokens) / this.limit.perSecond;
    return rateLimited(
      wait,
      `Too many failed authentication attempts from this address (limit ${this.limit.perSecond} per second, ` +
        `burst ${this.limit.burst}); retry later.`,
    );
  }
}
