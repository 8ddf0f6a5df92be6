import { invalidApiKey } from "../errors/index.js";

/** Who a request acts for. */
export interface Principal {
  accountId: string;
  keyId: string;
}

export type KeyLookup = (secret: string) => Promise<Principal | null>;

interface Entry {
  value: Promise<Principal | null>;
  expiresAt: number;
}

const MAX_KEY_LENGTH = 256;

/**
 * Resolves `Authorization: Bearer <key>` to a principal. Lookups are cached for a short TTL (and
 * concurrent lookups of one key share a query), so the hot path rarely touches the database; a
 * revocation takes effect on this replica at once through forget() and elsewhere within the TTL.
 */
export class Authenticator {
  private readonly cache = new Map<string, Entry>();

  constructor(
    private readonly lookup: KeyLookup,
    private readonly ttlMs: number,
    private readonly maxEntries = 50_000,
  ) {}

  async authenticate(authorization: string | undefined): Promise<Principal> {
    const secret = bearerToken(authorization);
    const now = Date.now();
    let entry = this.cache.get(secret);
    if (!entry || entry.expiresAt <= now) {
      if (this.cache.size >= this.maxEntries) this.evictOldest();
      const value = this.lookup(secret);
      entry = { value, expiresAt: now + this.ttlMs };
      this.cache.set(secret, entry);
      value.catch(() => this.cache.delete(secret));
    }
    const principal = await entry.value;
    if (!principal) throw invalidApiKey();
    return principal;
  }

  /** Drops every cached entry (after a key was revoked or an account disabled). */
  forgetAll(): void {
    this.cache.clear();
  }

  private evictOldest(): void {
    const drop = Math.max(1, Math.floor(this.maxEntries / 10));
    let i = 0;
    for (const key of this.cache.keys()) {
      if (i++ >= drop) break;
      this.cache.delete(key);
    }
  }
}

function bearerToken(authorization: string | undefined): string {
  if (!authorization) {
    throw invalidApiKey(
      "You didn't provide an API key. Send it in the Authorization header as 'Authorization: Bearer YOUR_KEY'.",
    );
  }
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  if (!match?.[1]) {
    throw invalidApiKey("The Authorization header must have the form 'Bearer YOUR_KEY'.");
  }
  if (match[1].length > MAX_KEY_LENGTH) throw invalidApiKey();
  return match[1];
}
