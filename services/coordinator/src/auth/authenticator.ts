import { invalidApiKey } from "../errors/index.js";
import type { HttpRequest } from "../http/types.js";
import type { FailedAuthLimiter } from "./failed-auth-limiter.js";

/** Who a request acts for. */
export interface Principal {
  accountId: string;
  keyId: string;
}

export type KeyLookup = (secret: string) => Promise<Principal | null>;

export interface AuthenticatorOptions {
  /** How long a look-up's answer (a key, or that there is none) is believed. */
  ttlMs: number;
  /** Failed look-ups per client address; a look-up that may fail takes a token first. */
  failures: FailedAuthLimiter;
  /** The client address of an HTTP request (the socket's peer, or X-Forwarded-For when trusted). */
  addressOf: (req: HttpRequest) => string;
  /** Valid keys cached at once (default 50,000). */
  maxEntries?: number;
  /** Unknown keys remembered at once (default 10,000). */
  maxNegativeEntries?: number;
}

const MAX_KEY_LENGTH = 256;

/**
 * Resolves `Authorization: Bearer <key>` to a principal. Valid keys are cached for a short TTL (and
 * concurrent look-ups of one key share a query), so the hot path rarely touches the database; a
 * revocation takes effect on this replica at once through forgetAll() and elsewhere within the TTL.
 *
 * Keys that resolved to nothing are remembered apart, in a negative cache of their own: a flood of
 * bad keys neither queries again for a repeated key nor pushes valid keys out of their cache. Every
 * look-up the cache cannot answer takes a token from the client address's failed-auth bucket before
 * it queries (given back when the key is valid), so distinct bad keys from one address cost at most
 * the bucket's burst in queries before the address gets 429.
 */
export class Authenticator {
  private readonly valid = new Map<string, { principal: Principal; expiresAt: number }>();
  private readonly invalid = new Map<string, number>();
  private readonly pending = new Map<string, Promise<Principal | null>>();
  private readonly maxEntries: number;
  private readonly maxNegativeEntries: number;

  constructor(
    private readonly lookup: KeyLookup,
    private readonly options: AuthenticatorOptions,
  ) {
    this.maxEntries = options.maxEntries ?? 50_000;
    this.maxNegativeEntries = options.maxNegativeEntries ?? 10_000;
  }

  /** The client address per-address limits count an HTTP request under. */
  addressOf(req: HttpRequest): string {
    return this.options.addressOf(req);
  }

  /** authenticate() with the request's Authorization header and client address. */
  authenticateRequest(req: HttpRequest): Promise<Principal> {
    return this.authenticate(req.headers.authorization, this.options.addressOf(req));
  }

  async authenticate(authorization: string | undefined, address: string): Promise<Principal> {
    const secret = bearerToken(authorization);
    const now = Date.now();
    const cached = this.valid.get(secret);
    if (cached && cached.expiresAt > now) return cached.principal;
    const joined = this.pending.get(secret);
    if (joined) {
      // Another request is looking this key up already: share its answer, and the token it took (a
      // burst of requests carrying one key, after a restart emptied the cache, is one look-up).
      const principal = await joined;
      if (!principal) throw invalidApiKey();
      return principal;
    }
    const { failures } = this.options;
    failures.take(address);
    const knownBad = this.invalid.get(secret);
    if (knownBad !== undefined && knownBad > now) throw invalidApiKey();
    let principal: Principal | null;
    try {
      principal = await this.query(secret);
    } catch (e) {
      // The database failed, not the client: the attempt is not held against its address.
      failures.refund(address);
      throw e;
    }
    if (!principal) {
      this.remember(this.invalid, secret, now + this.options.ttlMs, this.maxNegativeEntries);
      throw invalidApiKey();
    }
    failures.refund(address);
    this.invalid.delete(secret);
    this.remember(this.valid, secret, { principal, expiresAt: now + this.options.ttlMs }, this.maxEntries);
    return principal;
  }

  /** Drops every cached answer (after a key was revoked or an account disabled or enabled). */
  forgetAll(): void {
    this.valid.clear();
    this.invalid.clear();
  }

  /** One query per key at a time, however many requests carry it. */
  private query(secret: string): Promise<Principal | null> {
    let pending = this.pending.get(secret);
    if (!pending) {
      pending = this.lookup(secret).finally(() => this.pending.delete(secret));
      this.pending.set(secret, pending);
    }
    return pending;
  }

  /** Adds an entry, dropping the oldest tenth when the map is full (expired ones go first in time). */
  private remember<V>(map: Map<string, V>, key: string, value: V, max: number): void {
    map.delete(key);
    if (map.size >= max) {
      const drop = Math.max(1, Math.floor(max / 10));
      let i = 0;
      for (const k of map.keys()) {
        if (i++ >= drop) break;
        map.delete(k);
      }
    }
    map.set(key, value);
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
