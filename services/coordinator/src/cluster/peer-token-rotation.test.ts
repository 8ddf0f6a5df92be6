import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { PeerService } from "@darkbloom/protocol/cluster/v1";
import { ScriptedProvider } from "@darkbloom/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { CoordinatorConfig } from "../config.js";
import {
  adminClient,
  postJson,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";

// A peer token rotated in one rolling restart: the replicas started after the rotation have the new
// token and accept the old one too (--previous-peer-token); those started before know only the old
// one. Both kinds forward to each other, and no consumer request fails on the way.

const OLD = "old-peer-token-for-the-rotation-0123";
const NEW = "new-peer-token-for-the-rotation-4567";
const UNRELATED = "unrelated-peer-token-of-another-89ab";

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

async function replica(config: Partial<CoordinatorConfig>, database?: string): Promise<TestCoordinator> {
  const c = await startTestCoordinator(server.url, config, database ? { database } : {});
  started.push({ stop: () => c.close() });
  return c;
}

async function provider(on: TestCoordinator, model: string): Promise<ScriptedProvider> {
  const p = new ScriptedProvider({
    baseUrl: on.url,
    models: [{ id: model, contextLength: 4096 }],
    maxBatch: 4,
  });
  await p.start();
  started.push({ stop: () => p.stop() });
  return p;
}

/** Waits until `on` has read `p`'s row from the directory (without sending it a request). */
async function known(on: TestCoordinator, p: ScriptedProvider): Promise<void> {
  await expect
    .poll(() => on.coordinator.cluster.remote().some((e) => e.providerId === p.providerId && e.dispatch), {
      timeout: 10_000,
    })
    .toBe(true);
}

const chat = (model: string, stream = false) => ({
  model,
  messages: [{ role: "user", content: "across a rotation" }],
  max_tokens: 16,
  stream,
});

/** Forwarded requests `on` admitted for peers, by model. */
async function received(on: TestCoordinator, model: string): Promise<number> {
  const text = await on.coordinator.metrics.registry.metrics();
  const series = `darkbloom_forwarded_requests_total{direction="received",model="${model}",result="admitted"}`;
  return Number(text.match(new RegExp(`^${series.replace(/[{}]/g, "\\$&")} (\\S+)$`, "m"))?.[1] ?? 0);
}

/** PeerService.Untrusted of an absent provider at `url` with `token`: the outcome's code name. */
async function peerCall(url: string, token: string): Promise<string> {
  const client = createClient(PeerService, createConnectTransport({ baseUrl: url, httpVersion: "2" }));
  try {
    await client.untrusted(
      { providerId: "prov_absent", code: "test", message: "test" },
      { headers: { authorization: `Bearer ${token}` } },
    );
    return "Ok";
  } catch (e) {
    return Code[ConnectError.from(e).code];
  }
}

describe("a peer token rotation", () => {
  it("keeps replicas on the new token and replicas on the old one forwarding to each other", async () => {
    // `fresh` was restarted with the rotation; `old` has not been yet.
    const fresh = await replica({ peerToken: NEW, previousPeerToken: OLD });
    const old = await replica({ peerToken: OLD }, fresh.coordinator.databaseUrl);
    const onFresh = await provider(fresh, "rot-fresh");
    const onOld = await provider(old, "rot-old");
    await known(fresh, onOld);
    await known(old, onFresh);

    // Every request succeeds, the first included: no poll until 200 hides a refused one.
    for (let i = 0; i < 3; i++) {
      // fresh -> old: the new token is refused; the old one is sent again at once, then kept.
      const toOld = await postJson(fresh.url, "/v1/chat/completions", fresh.apiKey, chat("rot-old", i === 1));
      expect(toOld.status).toBe(200);
      expect(toOld.headers.get("x-provider-id")).toBe(onOld.providerId);
      if (i !== 1) expect(JSON.parse(toOld.headers.get("x-timing") ?? "{}").forward).toBeGreaterThan(0);
      const text = await toOld.text();
      expect(text).toContain("tok15 ");
      // old -> fresh: the old token is the previous one there, which it accepts.
      const toFresh = await postJson(old.url, "/v1/chat/completions", old.apiKey, chat("rot-fresh"));
      expect(toFresh.status).toBe(200);
      expect(toFresh.headers.get("x-provider-id")).toBe(onFresh.providerId);
      expect((await readJson(toFresh)).choices[0].message.content).toContain("tok15 ");
    }
    expect(await received(old, "rot-old")).toBe(3);
    expect(await received(fresh, "rot-fresh")).toBe(3);

    // A unary call from a replica that never called `old` yet: refused with the new token, retried.
    const second = await replica({ peerToken: NEW, previousPeerToken: OLD }, fresh.coordinator.databaseUrl);
    await known(second, onOld);
    await adminClient(second.url).unloadProviderModel({
      providerId: onOld.providerId ?? "",
      modelId: "rot-old",
    });
    expect(onOld.loadModels.map((c) => [c.kind, c.modelId])).toEqual([["unload", "rot-old"]]);

    // Both tokens are peer credentials on the rotated replica, and only the old one on the other.
    expect(await peerCall(fresh.url, NEW)).toBe("NotFound");
    expect(await peerCall(fresh.url, OLD)).toBe("NotFound");
    expect(await peerCall(old.url, OLD)).toBe("NotFound");
    expect(await peerCall(old.url, NEW)).toBe("Unauthenticated");
  });

  it("still refuses a replica with an unrelated token, whose requests are not admitted anywhere", async () => {
    const fresh = await replica({ peerToken: NEW, previousPeerToken: OLD });
    const onFresh = await provider(fresh, "rot-only");
    const stranger = await replica({ peerToken: UNRELATED }, fresh.coordinator.databaseUrl);
    await known(stranger, onFresh);
    const res = await postJson(stranger.url, "/v1/chat/completions", stranger.apiKey, chat("rot-only"));
    // Refused at the door, routed again, and no other provider has the model.
    expect(res.status).not.toBe(200);
    expect(await received(fresh, "rot-only")).toBe(0);
    expect(await peerCall(fresh.url, UNRELATED)).toBe("Unauthenticated");
    expect(await peerCall(stranger.url, NEW)).toBe("Unauthenticated");
  });
});
