import { Code } from "@connectrpc/connect";
import { ScriptedProvider } from "@darkbloom/testing";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { CoordinatorConfig } from "../config.js";
import {
  adminClient,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";

// Issue 12 item 1: two coordinator replicas on one database answer alike for the providers connected
// to either, through the provider directory (LISTEN/NOTIFY, polling as the backstop, stale replicas'
// rows ignored and deleted).

let server: TestPostgres;
beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});

/** Well above a NOTIFY's round trip, well below the 5 s default poll: a LISTEN must have carried it. */
const PROMPT_MS = 1_500;

const started: Array<{ stop(): Promise<void> }> = [];
afterEach(async () => {
  for (const s of started.splice(0).reverse()) await s.stop().catch(() => undefined);
});

async function replicas(
  overrides: Partial<CoordinatorConfig> = {},
  bOverrides: Partial<CoordinatorConfig> = {},
): Promise<{ a: TestCoordinator; b: TestCoordinator }> {
  const a = await startTestCoordinator(server.url, overrides);
  // B shares A's database; B closes first, and A drops the database.
  const b = await startTestCoordinator(
    server.url,
    { ...overrides, ...bOverrides },
    {
      database: a.coordinator.databaseUrl,
    },
  );
  started.push({ stop: () => a.close() }, { stop: () => b.close() });
  return { a, b };
}

async function provider(on: TestCoordinator, model: string, maxBatch = 4): Promise<ScriptedProvider> {
  const p = new ScriptedProvider({ baseUrl: on.url, models: [{ id: model, contextLength: 4096 }], maxBatch });
  await p.start();
  started.push({ stop: () => p.stop() });
  return p;
}

async function modelIds(t: TestCoordinator): Promise<string[]> {
  const res = await fetch(new URL("/v1/models", t.url), { headers: { authorization: `Bearer ${t.apiKey}` } });
  expect(res.status).toBe(200);
  return (await readJson(res)).data.map((m: { id: string }) => m.id);
}

async function attestations(t: TestCoordinator): Promise<unknown[]> {
  const res = await fetch(new URL("/v1/providers/attestation", t.url));
  expect(res.status).toBe(200);
  return (await readJson(res)).data;
}

async function adminProviders(t: TestCoordinator): Promise<Array<{ providerId: string; models: string[] }>> {
  return (await adminClient(t.url).listProviders({})).providers;
}

async function withClient<T>(url: string, f: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await f(c);
  } finally {
    await c.end();
  }
}

describe("provider directory across two replicas", () => {
  it("lists a provider connected to A in B's /v1/models promptly, and drops it when it disconnects", async () => {
    const { a, b } = await replicas();
    expect(await modelIds(b)).not.toContain("remote-model");
    const p = await provider(a, "remote-model");
    await expect.poll(() => modelIds(b), { timeout: PROMPT_MS, interval: 50 }).toContain("remote-model");
    const entry = b.coordinator.cluster.all().find((e) => e.providerId === p.providerId);
    expect(entry).toMatchObject({
      instanceId: a.coordinator.billing?.instanceId,
      advertiseUrl: a.url,
      machineId: p.machineId,
      models: [{ id: "remote-model", contextLength: 4096 }],
      maxBatch: 4,
      freeSlots: 4,
      trustLevel: "none",
    });
    // A lists it from its own session, B from the directory: the same answer.
    expect(await modelIds(a)).toEqual(await modelIds(b));

    await p.stop();
    await expect.poll(() => modelIds(b), { timeout: PROMPT_MS, interval: 50 }).not.toContain("remote-model");
  });

  it("lists every replica's providers alike in the attestation list and admin ListProviders", async () => {
    const { a, b } = await replicas();
    const onA = await provider(a, "model-a");
    const onB = await provider(b, "model-b");
    const ids = [onA.providerId, onB.providerId].sort();
    for (const t of [a, b]) {
      await expect
        .poll(async () => (await attestations(t)).map((e) => (e as { provider_id: string }).provider_id), {
          timeout: PROMPT_MS,
          interval: 50,
        })
        .toEqual(ids);
      await expect
        .poll(async () => (await adminProviders(t)).map((p) => p.providerId), { timeout: PROMPT_MS })
        .toEqual(ids);
    }
    // The same attestation entries from both (the holder's judgement, carried by the directory).
    expect(await attestations(b)).toEqual(await attestations(a));
    const fromB = (await adminProviders(b)).find((p) => p.providerId === onA.providerId);
    expect(fromB).toMatchObject({
      machineId: onA.machineId,
      models: ["model-a"],
      trustLevel: "none",
      maxBatch: 4,
    });
    // Draining goes through the holder's stream: B names the replica to ask.
    await expect(
      adminClient(b.url).drainProvider({ providerId: onA.providerId ?? "" }),
    ).rejects.toMatchObject({
      code: Code.FailedPrecondition,
      rawMessage: expect.stringContaining(a.url),
    });
    await expect(adminClient(b.url).drainProvider({ providerId: "prov_nobody" })).rejects.toMatchObject({
      code: Code.NotFound,
    });

    await onA.stop();
    await expect
      .poll(async () => (await adminProviders(b)).map((p) => p.providerId), { timeout: PROMPT_MS })
      .toEqual([onB.providerId]);
    await expect.poll(async () => (await attestations(b)).length, { timeout: PROMPT_MS }).toBe(1);
  });

  it("propagates free slots at most once a flush period, however often they change", async () => {
    const { a, b } = await replicas({ directoryFlushMs: 1_000 });
    const p = await provider(a, "busy-model", 8);
    await expect
      .poll(() => b.coordinator.cluster.all().some((e) => e.providerId === p.providerId), {
        timeout: PROMPT_MS,
      })
      .toBe(true);
    const handle = a.coordinator.registry.get(p.providerId ?? "");
    if (!handle) throw new Error("A has no session for the provider");

    await withClient(a.coordinator.databaseUrl, async (listener) => {
      let notifications = 0;
      listener.on("notification", () => notifications++);
      await listener.query("LISTEN provider_directory");
      // 200 slot changes in about a second, ending with 3 slots held.
      for (let i = 0; i < 100; i++) {
        handle.reserveSlot();
        if (i % 2 === 1) await new Promise((r) => setTimeout(r, 10));
        if (i < 97) handle.releaseSlot();
      }
      await expect
        .poll(() => b.coordinator.cluster.all().find((e) => e.providerId === p.providerId)?.freeSlots, {
          timeout: 2_500,
        })
        .toBe(5);
      // One write (and NOTIFY) a period: the burst spanned about two periods.
      expect(notifications).toBeGreaterThan(0);
      expect(notifications).toBeLessThanOrEqual(3);
    });
  });

  it("ignores the rows of a replica whose liveness went stale, and deletes a dead replica's rows", async () => {
    const { a, b } = await replicas({
      instanceHeartbeatMs: 200,
      instanceStaleMs: 1_000,
      directoryPollMs: 500,
    });
    const p = await provider(a, "orphan-model");
    await expect.poll(() => modelIds(b), { timeout: PROMPT_MS, interval: 50 }).toContain("orphan-model");

    // A stops recording itself alive (a hung or partitioned process) while its session stays open.
    await a.coordinator.billing?.stop();
    await expect.poll(() => modelIds(b), { timeout: 3_000, interval: 100 }).not.toContain("orphan-model");
    expect(a.coordinator.registry.get(p.providerId ?? "")).toBeDefined();

    // A replica killed outright leaves its rows behind: the first to see them stale deletes them.
    await withClient(a.coordinator.databaseUrl, async (c) => {
      await c.query(
        "INSERT INTO coordinator_instances (id, last_seen) VALUES ('coord_dead', now() - interval '1 hour')",
      );
      await c.query(
        `INSERT INTO provider_directory (provider_id, instance_id, advertise_url, machine_id, models,
           max_batch, free_slots, trust_level, routable, daemon_version, connected_at)
         VALUES ('prov_dead', 'coord_dead', 'http://10.0.0.9:8080', 'm-dead',
           '[{"id": "dead-model", "contextLength": 2048}]', 4, 4, 'none', true, '1.0.0', now())`,
      );
      expect(await modelIds(b)).not.toContain("dead-model");
      await expect
        .poll(
          async () =>
            (await c.query("SELECT 1 FROM provider_directory WHERE instance_id = 'coord_dead'")).rowCount,
          { timeout: 3_000 },
        )
        .toBe(0);
    });
  });

  it("keeps a replica without billing alive in the directory (its writer renews its liveness)", async () => {
    const { a, b } = await replicas({
      billingEnabled: false,
      instanceHeartbeatMs: 200,
      instanceStaleMs: 1_000,
      directoryPollMs: 300,
    });
    await provider(a, "unbilled-model");
    await expect.poll(() => modelIds(b), { timeout: PROMPT_MS, interval: 50 }).toContain("unbilled-model");
    // Several stale periods later A is still alive and its provider still listed.
    await new Promise((r) => setTimeout(r, 2_500));
    expect(await modelIds(b)).toContain("unbilled-model");
  });

  it("keeps up by polling when its LISTEN connection drops, and re-opens it", async () => {
    const { a, b } = await replicas({}, { directoryPollMs: 400 });
    const name = `darkbloom-listen:${b.coordinator.billing?.instanceId}`;
    const listeners = (c: pg.Client) =>
      c.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = $1", [name]);
    await withClient(a.coordinator.databaseUrl, async (c) => {
      const before = await listeners(c);
      expect(before.rowCount).toBe(1);
      await c.query("SELECT pg_terminate_backend($1)", [before.rows[0]?.pid]);

      const p = await provider(a, "polled-model");
      await expect.poll(() => modelIds(b), { timeout: 2_000, interval: 50 }).toContain("polled-model");
      await expect
        .poll(async () => (await listeners(c)).rows.map((r) => r.pid), { timeout: 2_000 })
        .toSatisfy((pids: number[]) => pids.length === 1 && pids[0] !== before.rows[0]?.pid);
      await p.stop();
      await expect.poll(() => modelIds(b), { timeout: 2_000, interval: 50 }).not.toContain("polled-model");
    });
  });

  it("carries a catalog change to the other replica at once (NOTIFY), not at its next poll", async () => {
    const { a, b } = await replicas();
    await a.coordinator.catalog.upsert({
      id: "announced-model",
      inputMicroUsdPerMillion: 1_000_000n,
      outputMicroUsdPerMillion: 2_000_000n,
    });
    // The catalog's own poll is every 10 s: well within PROMPT_MS, only the NOTIFY can have done it.
    await expect
      .poll(() => b.coordinator.catalog.get("announced-model")?.outputMicroUsdPerMillion, {
        timeout: PROMPT_MS,
        interval: 50,
      })
      .toBe(2_000_000n);
  });

  it("deletes a replica's rows when it shuts down", async () => {
    const { a, b } = await replicas();
    await provider(a, "leaving-model");
    await expect.poll(() => modelIds(b), { timeout: PROMPT_MS, interval: 50 }).toContain("leaving-model");
    const url = a.coordinator.databaseUrl;
    const instanceId = a.coordinator.billing?.instanceId;
    await a.coordinator.close({ drainMs: 0 });
    await withClient(url, async (c) => {
      expect(
        (await c.query("SELECT 1 FROM provider_directory WHERE instance_id = $1", [instanceId])).rowCount,
      ).toBe(0);
    });
    await expect.poll(() => modelIds(b), { timeout: PROMPT_MS, interval: 50 }).not.toContain("leaving-model");
  });
});
