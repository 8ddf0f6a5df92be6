import { rateLimited } from "../errors/index.js";

export interface RateLimit {
  /** Sustained requests per second; 0 disables the limit. */
  perSecond: number;
  /** Requests allowed in a burst (the bucket's size). */
  burst: number;
  /** Names the tier in the 429 message, e.g. "inference" or "money". */
  tier?: string;
}

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/**
 * Per-account token buckets. take() spends one token or throws 429 with Retry-After; headers()
 * reports the X-RateLimit-* values for a response.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly sweep: NodeJS.Timeout | undefined;

  constructor(
    readonly limit: RateLimit,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (limit.perSecond > 0) {
      // Full buckets carry no information; forget them so idle accounts cost no memory.
      this.sweep = setInterval(() => this.forgetFull(), 60_000);
      this.sweep.unref();
    }
  }

  get enabled(): boolean {
    return this.limit.perSecond > 0;
  }

  /** Spends one request for the account; returns the X-RateLimit-* headers to send. */
  take(accountId: string): Record<string, string> {
    if (!this.enabled) return {};
    const b = this.refill(accountId);
    if (b.tokens < 1) {
      const wait = (1 - b.tokens) / this.limit.perSecond;
      const e = rateLimited(
        wait,
        `Rate limit of ${this.limit.perSecond} ${this.limit.tier ? `${this.limit.tier} ` : ""}requests per second ` +
          `(burst ${this.limit.burst}) exceeded for this account.`,
      );
      Object.assign(e.headers, this.headersFor(b));
      throw e;
    }
    b.tokens -= 1;
    return this.headersFor(b);
  }

  close(): void {
    if (this.sweep) clearInterval(this.sweep);
  }

  private refill(accountId: string): Bucket {
    const t = this.now();
    let b = this.buckets.get(accountId);
    if (!b) {
      b = { tokens: this.limit.burst, updatedAt: t };
      this.buckets.set(accountId, b);
      return b;
    }
    b.tokens = Math.min(this.limit.burst, b.tokens + ((t - b.updatedAt) / 1000) * this.limit.perSecond);
    b.updatedAt = t;
    return b;
  }

  private headersFor(b: Bucket): Record<string, string> {
    return {
      "X-RateLimit-Limit": String(this.limit.burst),
      "X-RateLimit-Remaining": String(Math.max(0, Math.floor(b.tokens))),
      "X-RateLimit-Reset": String(Math.ceil((this.limit.burst - b.tokens) / this.limit.perSecond)),
    };
  }

  private forgetFull(): void {
    for (const [id] of this.buckets) {
      if (this.refill(id).tokens >= this.limit.burst) this.buckets.delete(id);
    }
  }
}
