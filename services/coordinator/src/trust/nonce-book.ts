export type NonceState = "outstanding" | "answered" | "expired";

export interface NonceEntry {
  providerId: string;
  state: NonceState;
  at: number;
}

/**
 * Every challenge nonce this coordinator issued recently, with whom it was issued to and whether it
 * was answered: a nonce is single use, so an answer carrying one already answered (or issued to
 * another provider) is a replay. Entries are kept for `retentionMs` (default one hour) and at most
 * `maxEntries`.
 */
export class NonceBook {
  private readonly entries = new Map<string, NonceEntry>();

  constructor(
    private readonly retentionMs = 60 * 60_000,
    private readonly maxEntries = 1_000_000,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get(nonceHex: string): NonceEntry | undefined {
    return this.entries.get(nonceHex);
  }

  set(nonceHex: string, providerId: string, state: NonceState, now = Date.now()): void {
    const existing = this.entries.get(nonceHex);
    if (existing) {
      existing.state = state;
      return;
    }
    this.entries.set(nonceHex, { providerId, state, at: now });
    this.prune(now);
  }

  private prune(now: number): void {
    // Map iteration is insertion order: the oldest entries come first.
    for (const [key, entry] of this.entries) {
      if (now - entry.at <= this.retentionMs && this.entries.size <= this.maxEntries) break;
      this.entries.delete(key);
    }
  }
}
