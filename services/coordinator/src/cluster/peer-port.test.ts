import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { PeerService } from "@darkbloom/protocol/cluster/v1";
import { ScriptedProvider } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  postJson,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";

// With a peer port, PeerService is served there only: the replicas advertise it and forward over
// it, and the main port, which consumers and providers reach, answers it as an unknown route.

const PEER_TOKEN = "peer-port-test-token-0123456789";

let server: TestPostgres;
let a: TestCoordinator;
let b: TestCoordinator;
let provider: ScriptedProvider;

beforeAll(async () => {
  server = await startTestPostgres();
  const config = { peerToken: PEER_TOKEN, peerPort: 0 };
  a = await startTestCoordinator(server.url, config);
  b = await startTestCoordinator(server.url, config, { database: a.coordinator.databaseUrl });
  provider = new ScriptedProvider({ baseUrl: b.url, models: [{ id: "fw", contextLength: 4096 }] });
  await provider.start();
});

afterAll(async () => {
  await provider?.stop();
  await a?.close();
  await b?.close();
  await server?.stop();
});

const chat = { model: "fw", messages: [{ role: "user", content: "over the peer port" }], max_tokens: 16 };

/** PeerService.Untrusted of an unknown provider at `url`, with the peer token: the outcome's code name. */
async function untrusted(url: string): Promise<string> {
  const client = createClient(PeerService, createConnectTransport({ baseUrl: url, httpVersion: "2" }));
  try {
    await client.untrusted(
      { providerId: "prov_absent", code: "test", message: "test" },
      { headers: { authorization: `Bearer ${PEER_TOKEN}` } },
    );
    return "Ok";
  } catch (e) {
    return Code[ConnectError.from(e).code];
  }
}

describe("a peer port", () => {
  it("carries the forwarded request between replicas, advertised in the provider directory", async () => {
    const peerUrl = b.coordinator.peerUrl ?? "";
    expect(peerUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(peerUrl).not.toBe(b.url);
    await expect
      .poll(() => a.coordinator.cluster.remote().map((e) => e.advertiseUrl), { timeout: 10_000 })
      .toEqual([peerUrl]);
    await expect
      .poll(async () => (await postJson(a.url, "/v1/chat/completions", a.apiKey, chat)).status, {
        timeout: 10_000,
      })
      .toBe(200);
    const res = await postJson(a.url, "/v1/chat/completions", a.apiKey, chat);
    expect(res.status).toBe(200);
    expect(res.headers.get("x-provider-id")).toBe(provider.providerId);
    expect(JSON.parse(res.headers.get("x-timing") ?? "{}").forward).toBeGreaterThan(0);
    expect((await readJson(res)).choices[0].message.content).toContain("tok15 ");
  });

  it("serves PeerService only there: 404 on the main port, and nothing else on the peer port", async () => {
    const rpc = "/darkbloom.cluster.v1.PeerService/Untrusted";
    const onMain = await postJson(
      b.url,
      rpc,
      undefined,
      {},
      { headers: { authorization: `Bearer ${PEER_TOKEN}` } },
    );
    expect(onMain.status).toBe(404);
    expect(await untrusted(b.url)).toBe("Unimplemented"); // what a Connect client makes of the 404
    // On the peer port the call is served (and answered NotFound: no such provider is connected).
    expect(await untrusted(b.coordinator.peerUrl ?? "")).toBe("NotFound");
    const models = await fetch(new URL("/v1/models", b.coordinator.peerUrl ?? ""), {
      headers: { authorization: `Bearer ${b.apiKey}` },
    });
    expect(models.status).toBe(404);
  });
});
