import { describe, expect, it } from "vitest";
import { ApiError } from "../errors/index.js";
import type { HttpRequest } from "../http/types.js";
import { Authenticator, type Principal } from "./authenticator.js";
import { FailedAuthLimiter } from "./failed-auth-limiter.js";

const GOOD = "good-key";
const principal: Principal = { accountId: "acct_1", keyId: "key_1" };

/** An authenticator over a counting look-up that knows one key. */
function setup(options: { burst?: number; maxEntries?: number; fail?: () => boolean } = {}) {
  const lookups: string[] = [];
  const lookup = async (secret: string) => {
    lookups.push(secret);
    await new Promise((r) => setImmediate(r));
    if (options.fail?.()) throw new Error("database down");
    return secret === GOOD ? principal : null;
  };
  const failures = new FailedAuthLimiter({ perSecond: 1, burst: options.burst ?? 5, maxAddresses: 1_000 });
  const auth = new Authenticator(lookup, {
    ttlMs: 60_000,
    failures,
    addressOf: (req: HttpRequest) => req.socket?.remoteAddress ?? "unknown",
    ...(options.maxEntries ? { maxEntries: options.maxEntries, maxNegativeEntries: options.maxEntries } : {}),
  });
  return { auth, lookups, failures };
}

async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (e) {
    if (e instanceof ApiError) return e.status;
    throw e;
  }
}

describe("Authenticator", () => {
  it("asks the database once for a key repeated, valid or not", async () => {
    const { auth, lookups } = setup();
    await auth.authenticate(`Bearer ${GOOD}`, "10.0.0.1");
    await auth.authenticate(`Bearer ${GOOD}`, "10.0.0.1");
    expect(await status(auth.authenticate("Bearer nope", "10.0.0.2"))).toBe(401);
    expect(await status(auth.authenticate("Bearer nope", "10.0.0.3"))).toBe(401);
    expect(lookups).toEqual([GOOD, "nope"]);
  });

  it("a burst of requests carrying one valid key with the cache cold is one look-up and one token, never 429", async () => {
    const { auth, lookups } = setup({ burst: 5 });
    const results = await Promise.all(
      Array.from({ length: 50 }, () => status(auth.authenticate(`Bearer ${GOOD}`, "10.0.0.1"))),
    );
    expect(results.every((s) => s === 200)).toBe(true);
    expect(lookups).toEqual([GOOD]);
  });

  it("one address: at most a burst of queries for distinct bad keys, even sent at once, then 429", async () => {
    const { auth, lookups } = setup({ burst: 5 });
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => status(auth.authenticate(`Bearer bad-${i}`, "10.0.0.1"))),
    );
    expect(results.filter((s) => s === 401)).toHaveLength(5);
    expect(results.filter((s) => s === 429)).toHaveLength(45);
    expect(lookups).toHaveLength(5);
    // Another address is not affected, and a cached valid key still answers from this one.
    expect(await status(auth.authenticate("Bearer bad-x", "10.0.0.2"))).toBe(401);
  });

  it("a flood of bad keys from many addresses does not push a valid key out of the cache", async () => {
    const { auth, lookups } = setup({ maxEntries: 10 });
    await auth.authenticate(`Bearer ${GOOD}`, "10.0.0.1");
    for (let i = 0; i < 200; i++) {
      expect(await status(auth.authenticate(`Bearer bad-${i}`, `10.1.${i >> 8}.${i & 255}`))).toBe(401);
    }
    const before = lookups.length;
    await expect(auth.authenticate(`Bearer ${GOOD}`, "10.0.0.1")).resolves.toEqual(principal);
    expect(lookups.length).toBe(before);
  });

  it("a valid key gives its token back; a database failure is not held against the address", async () => {
    let down = false;
    const { auth } = setup({ burst: 2, fail: () => down });
    for (let i = 0; i < 5; i++) {
      auth.forgetAll();
      await auth.authenticate(`Bearer ${GOOD}`, "10.0.0.1");
    }
    down = true;
    for (let i = 0; i < 5; i++)
      await expect(auth.authenticate("Bearer x", "10.0.0.1")).rejects.toThrow("database down");
    down = false;
    expect(await status(auth.authenticate("Bearer y", "10.0.0.1"))).toBe(401);
    expect(await status(auth.authenticate("Bearer z", "10.0.0.1"))).toBe(401);
    expect(await status(auth.authenticate("Bearer w", "10.0.0.1"))).toBe(429);
  });

  it("forgetAll() drops valid and invalid answers alike", async () => {
    const { auth, lookups } = setup();
    await auth.authenticate(`Bearer ${GOOD}`, "10.0.0.1");
    await status(auth.authenticate("Bearer nope", "10.0.0.1"));
    auth.forgetAll();
    await auth.authenticate(`Bearer ${GOOD}`, "10.0.0.1");
    await status(auth.authenticate("Bearer nope", "10.0.0.1"));
    expect(lookups).toEqual([GOOD, "nope", GOOD, "nope"]);
  });
});
