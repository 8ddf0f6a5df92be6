import https from "node:https";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { PeerService } from "@darkbloom/protocol/cluster/v1";
import { ScriptedProvider } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestCertificate, SecretVolume, type TestCertificate } from "../testing/test-certificates.js";
import {
  type AnyJson,
  postJson,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";

// With a peer port, PeerService is served there only: the replicas advertise it and forward over
// it, and the main port, which consumers and providers reach, answers it as an unknown route. With
// peerPlaintext, the main port serves TLS and the peer port h2c (replicas dial each other by pod
// IP, which the public certificate does not name).

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

/** A POST over HTTPS trusting `ca`: the status, the provider header and the body. */
function postTls(
  url: string,
  path: string,
  apiKey: string,
  body: unknown,
  ca: string,
): Promise<{ status: number; providerId: string | undefined; forwardUs: number; json: AnyJson }> {
  return new Promise((resolve, reject) => {
    const headers = { authorization: `Bearer ${apiKey}`, "content-type": "application/json" };
    const req = https.request(new URL(path, url), { method: "POST", headers, ca, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (c: string) => {
        text += c;
      });
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          providerId: res.headers["x-provider-id"] as string | undefined,
          forwardUs: JSON.parse((res.headers["x-timing"] as string | undefined) ?? "{}").forward ?? 0,
          json: text.startsWith("{") ? JSON.parse(text) : text,
        }),
      );
    });
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

describe("a plaintext peer port beside a TLS main port", () => {
  let certificate: TestCertificate;
  let volume: SecretVolume;
  let c: TestCoordinator;
  let d: TestCoordinator;
  let tlsProvider: ScriptedProvider;

  beforeAll(async () => {
    certificate = await makeTestCertificate(0x3003);
    volume = await SecretVolume.create(certificate);
    const config = {
      peerToken: PEER_TOKEN,
      peerPort: 0,
      peerPlaintext: true,
      tlsCertFile: volume.certFile,
      tlsKeyFile: volume.keyFile,
    };
    c = await startTestCoordinator(server.url, config);
    d = await startTestCoordinator(server.url, config, { database: c.coordinator.databaseUrl });
    tlsProvider = new ScriptedProvider({
      baseUrl: d.url,
      ca: [certificate.cert],
      models: [{ id: "fw-tls", contextLength: 4096 }],
    });
    await tlsProvider.start();
  });

  afterAll(async () => {
    await tlsProvider?.stop();
    await c?.close();
    await d?.close();
    await volume?.remove();
  });

  it("serves https on the main port, h2c on the peer port, and forwards over it", async () => {
    expect(d.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const peerUrl = d.coordinator.peerUrl ?? "";
    expect(peerUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    await expect
      .poll(() => c.coordinator.cluster.remote().map((e) => e.advertiseUrl), { timeout: 10_000 })
      .toEqual([peerUrl]);
    const request = { ...chat, model: "fw-tls" };
    await expect
      .poll(
        async () =>
          (await postTls(c.url, "/v1/chat/completions", c.apiKey, request, certificate.cert)).status,
        {
          timeout: 10_000,
        },
      )
      .toBe(200);
    const res = await postTls(c.url, "/v1/chat/completions", c.apiKey, request, certificate.cert);
    expect(res.status).toBe(200);
    expect(res.providerId).toBe(tlsProvider.providerId);
    expect(res.forwardUs).toBeGreaterThan(0);
    expect(res.json.choices[0].message.content).toContain("tok15 ");
    // h2c with the peer token is served there; the main port still refuses plaintext.
    expect(await untrusted(peerUrl)).toBe("NotFound");
    const plain = await fetch(new URL("/healthz", d.url.replace("https:", "http:")));
    expect(plain.status).toBe(400);
  });
});
