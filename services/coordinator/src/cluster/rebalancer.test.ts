import { ScriptedProvider } from "@darkbloom/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { postJson, startTestCoordinator, type TestCoordinator } from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { REBALANCE_REASON } from "./rebalancer.js";

// Issue 12 item 3: a replica holding more than its share of the cluster's providers asks idle ones,
// one an interval, to reconnect (behind a Service, to wherever they land); never a busy one.

let server: TestPostgres;
beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});

const started: Array<{ stop(): Promise<void> }> = [];
afterEach(async () => {
  for (const s of started.splice(0).reverse()) await s.stop().catch(() => undefined);
});

async function provider(on: TestCoordinator, name: string, slow = false): Promise<ScriptedProvider> {
  const p = new ScriptedProvider({
    baseUrl: on.url,
    models: [{ id: "rebalanced", contextLength: 4096 }],
    machineId: name,
    ...(slow
      ? { script: () => ({ tokens: Array.from({ length: 200 }, (_, i) => `t${i} `), interTokenDelayMs: 50 }) }
      : {}),
  });
  await p.start();
  started.push({ stop: () => p.stop() });
  return p;
}

describe("rebalancing provider streams among replicas", () => {
  it("drains one idle provider from a replica over its share, never a busy one, and stops at its share", async () => {
    const config = { rebalanceIntervalMs: 250, peerToken: "rebalance-test-peer-token-0123" };
    const a = await startTestCoordinator(server.url, config);
    const b = await startTestCoordinator(server.url, config, { database: a.coordinator.databaseUrl });
    started.push({ stop: () => a.close() }, { stop: () => b.close() });
    const drains = new Map<string, string[]>();
    const watch = (p: ScriptedProvider, name: string) =>
      p.on("drain", (d: { reason: string }) => drains.set(name, [...(drains.get(name) ?? []), d.reason]));

    await provider(b, "on-b");
    const busy = [await provider(a, "busy-1", true), await provider(a, "busy-2", true)];
    for (const [i, p] of busy.entries()) watch(p, `busy-${i + 1}`);
    // Both busy providers serve a long stream (10 s), pinned to each.
    const streams = busy.map((p) =>
      postJson(
        a.url,
        "/v1/chat/completions",
        a.apiKey,
        { model: "rebalanced", messages: [{ role: "user", content: "long" }], max_tokens: 250, stream: true },
        {
          headers: {
            "content-type": "application/json",
            authorization: `Bearer ${a.apiKey}`,
            "x-darkbloom-providers": p.providerId ?? "",
          },
        },
      ).then((res) => res.text()),
    );
    // Two of three providers on A, one on B: A holds its share (two), nothing moves.
    await new Promise((r) => setTimeout(r, 1_000));
    expect([...drains.keys()]).toEqual([]);

    // A third on A: over its share, and the only idle one is asked to reconnect.
    const idle = await provider(a, "idle");
    watch(idle, "idle");
    await expect.poll(() => drains.get("idle"), { timeout: 5_000 }).toEqual([REBALANCE_REASON]);
    // Then A is at its share again: nothing more moves, and the busy streams finish whole.
    await new Promise((r) => setTimeout(r, 1_000));
    expect([...drains.keys()]).toEqual(["idle"]);
    for (const text of await Promise.all(streams)) expect(text).toContain("data: [DONE]");
  });
});
