import { TrustLevel } from "@darkbloom/protocol/provider/v1";
import { describe, expect, it } from "vitest";
import { judge, testProvider } from "../testing/test-providers.js";
import { ProviderRegistry } from "./provider-registry.js";
import { RoomIndex } from "./room-index.js";
import { ROUTE_SAMPLE, Router } from "./router.js";

describe("RoomIndex", () => {
  it("tracks the providers of each model that have a free slot", () => {
    const index = new RoomIndex();
    const a = testProvider({ models: ["m", "n"], maxBatch: 1 });
    const b = testProvider({ models: ["m"], maxBatch: 2 });
    index.update(a);
    index.update(b);
    expect(index.count("m")).toBe(2);
    expect(index.count("n")).toBe(1);
    a.reserveSlot();
    index.update(a);
    expect(index.all("m")).toEqual([b]);
    expect(index.count("n")).toBe(0);
    a.releaseSlot();
    index.update(a);
    b.close();
    index.update(b);
    expect(index.all("m")).toEqual([a]);
    index.update(a); // idempotent
    expect(index.count("m")).toBe(1);
  });

  it("samples everyone up to k, else k drawn uniformly", () => {
    const index = new RoomIndex();
    const fleet = Array.from({ length: 100 }, () => testProvider());
    for (const p of fleet) index.update(p);
    expect(new Set(index.sample("m", 200))).toEqual(new Set(fleet));
    const hits = new Map<unknown, number>();
    for (let i = 0; i < 2_000; i++) {
      const s = index.sample("m", 5);
      expect(s).toHaveLength(5);
      for (const p of s) hits.set(p, (hits.get(p) ?? 0) + 1);
    }
    // 10,000 draws over 100 providers: each is drawn about 100 times.
    expect(Math.min(...hits.values())).toBeGreaterThan(50);
    expect(index.sample("nobody", 5)).toEqual([]);
  });
});

describe("Router on a large fleet", () => {
  it("routes among providers with room only, and finds the one eligible provider beyond any sample", async () => {
    const registry = new ProviderRegistry();
    const fleet = Array.from({ length: 20 * ROUTE_SAMPLE }, () => testProvider({ maxBatch: 1 }));
    const trusted = testProvider({ maxBatch: 1, trust: TrustLevel.SELF_SIGNED });
    judge(trusted, { attestedUntil: Number.MAX_SAFE_INTEGER });
    for (const p of [...fleet, trusted]) registry.add(p);
    const router = new Router(registry, { queueDepthPerModel: 10, queueTimeoutMs: 1_000 });
    try {
      const demand = { model: "m", promptTokens: 10, maxTokens: 10 };
      const lease = router.tryAcquire(demand, { minTrust: TrustLevel.SELF_SIGNED });
      expect(lease?.provider).toBe(trusted);
      // Every provider gets exactly one request before anyone is asked for a second.
      const leases = Array.from({ length: fleet.length }, () =>
        router.tryAcquire(demand, { minTrust: TrustLevel.NONE }),
      );
      expect(new Set(leases.map((l) => l?.provider)).size).toBe(fleet.length);
      expect(router.tryAcquire(demand, { minTrust: TrustLevel.NONE })).toBeUndefined();
      // A freed slot goes to the next waiter.
      const waiting = router.acquire(demand, { minTrust: TrustLevel.NONE });
      leases[7]?.release();
      expect((await waiting).provider).toBe(leases[7]?.provider);
    } finally {
      router.close(new Error("test over"));
    }
  });
});
