import { TrustLevel } from "@darkbloom/protocol/provider/v1";
import { afterEach, describe, expect, it } from "vitest";
import { ApiError } from "../errors/index.js";
import { testProvider } from "../testing/test-providers.js";
import { ProviderRegistry } from "./provider-registry.js";
import { type Lease, Router } from "./router.js";

const demand = { model: "m", promptTokens: 10, maxTokens: 10 };
const c = { minTrust: TrustLevel.NONE };

describe("Router", () => {
  let router: Router | undefined;
  afterEach(() => router?.close(new Error("test over")));

  it("reserves slots atomically up to max_batch, then queues in order", async () => {
    const registry = new ProviderRegistry();
    const p = testProvider({ maxBatch: 2 });
    registry.add(p);
    router = new Router(registry, { queueDepthPerModel: 10, queueTimeoutMs: 5_000 });
    const l1 = await router.acquire(demand, c);
    const l2 = await router.acquire(demand, c);
    expect(p.inFlight).toBe(2);
    const order: number[] = [];
    const track = (n: number) => (l: Lease) => {
      order.push(n);
      return l;
    };
    const w3 = router.acquire(demand, c).then(track(3));
    const w4 = router.acquire(demand, c).then(track(4));
    expect(router.queueLength("m")).toBe(2);
    l1.release();
    l1.release(); // idempotent
    const l3 = await w3;
    expect(p.inFlight).toBe(2);
    l2.release();
    const l4 = await w4;
    expect(order).toEqual([3, 4]);
    expect(l3.queuedMicros).toBeGreaterThan(0);
    l3.release();
    l4.release();
    expect(p.inFlight).toBe(0);
  });

  it("answers 503 model_not_available with Retry-After when the wait times out", async () => {
    const registry = new ProviderRegistry();
    router = new Router(registry, { queueDepthPerModel: 10, queueTimeoutMs: 50 });
    const e = await router.acquire(demand, c).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ApiError);
    expect((e as ApiError).status).toBe(503);
    expect((e as ApiError).code).toBe("model_not_available");
    expect((e as ApiError).headers["Retry-After"]).toBeDefined();
    expect(router.queueLength("m")).toBe(0);
  });

  it("refuses at once when the queue is full", async () => {
    const registry = new ProviderRegistry();
    router = new Router(registry, { queueDepthPerModel: 1, queueTimeoutMs: 5_000 });
    const first = router.acquire(demand, c);
    const e = await router.acquire(demand, c).catch((x: unknown) => x);
    expect((e as ApiError).status).toBe(503);
    expect((e as ApiError).message).toContain("queue full");
    registry.add(testProvider());
    (await first).release();
  });

  it("serves a queued request when a provider registers or reports capacity", async () => {
    const registry = new ProviderRegistry();
    router = new Router(registry, { queueDepthPerModel: 10, queueTimeoutMs: 5_000 });
    const waiting = router.acquire(demand, c);
    const p = testProvider({ id: "late" });
    registry.add(p);
    expect((await waiting).provider.id).toBe("late");
  });

  it("removes an aborted waiter from the queue", async () => {
    const registry = new ProviderRegistry();
    router = new Router(registry, { queueDepthPerModel: 10, queueTimeoutMs: 5_000 });
    const ac = new AbortController();
    const waiting = router.acquire(demand, c, ac.signal);
    ac.abort(new Error("gone"));
    await expect(waiting).rejects.toThrow("gone");
    expect(router.queueLength("m")).toBe(0);
  });

  it("a freed slot serves a waiter of another model on the same provider", async () => {
    const registry = new ProviderRegistry();
    const p = testProvider({ models: ["a", "b"], maxBatch: 1 });
    registry.add(p);
    router = new Router(registry, { queueDepthPerModel: 10, queueTimeoutMs: 5_000 });
    const la = await router.acquire({ ...demand, model: "a" }, c);
    const wb = router.acquire({ ...demand, model: "b" }, c);
    la.release();
    expect((await wb).provider).toBe(p);
  });
});
