import http from "node:http";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { PeerService } from "@darkbloom/protocol/cluster/v1";
import { ModelFeature } from "@darkbloom/protocol/provider/v1";
import { verifyEmbeddingsResponse } from "@darkbloom/protocol/verifiable-embeddings";
import { newSigningKey, ScriptedProvider, unitVector } from "@darkbloom/testing";
import pg from "pg";
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

// Issue 12 item 2: a request that lands on replica A for a provider whose stream replica B holds is
// forwarded to B over PeerService.Forward, sealed end to end between A and the provider.

const PEER_TOKEN = "peer-token-for-the-tests-0123456789";

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

async function replicas(
  overrides: Partial<CoordinatorConfig> = { peerToken: PEER_TOKEN },
): Promise<{ a: TestCoordinator; b: TestCoordinator }> {
  const a = await startTestCoordinator(server.url, overrides);
  const b = await startTestCoordinator(server.url, overrides, { database: a.coordinator.databaseUrl });
  started.push({ stop: () => a.close() }, { stop: () => b.close() });
  return { a, b };
}

async function provider(
  on: TestCoordinator,
  options: Partial<ConstructorParameters<typeof ScriptedProvider>[0]> = {},
) {
  const p = new ScriptedProvider({
    baseUrl: on.url,
    models: [{ id: "fw", contextLength: 4096 }],
    maxBatch: 4,
    ...options,
  });
  await p.start();
  started.push({ stop: () => p.stop() });
  return p;
}

const chat = (stream: boolean, extra: Record<string, unknown> = {}) => ({
  model: "fw",
  messages: [{ role: "user", content: "forward me" }],
  max_tokens: 16,
  stream,
  ...extra,
});

/** Waits until `on` routes model fw (it learned of the provider from the directory). */
async function routable(on: TestCoordinator): Promise<void> {
  await expect
    .poll(async () => (await postJson(on.url, "/v1/chat/completions", on.apiKey, chat(false))).status, {
      timeout: 10_000,
    })
    .toBe(200);
}

function timingOf(res: Response): Record<string, number> {
  return JSON.parse(res.headers.get("x-timing") ?? "{}");
}

describe("forwarding between coordinator replicas", () => {
  it("serves a consumer on A from a provider on B, streamed and not, sealed end to end", async () => {
    const { a, b } = await replicas();
    const p = await provider(b);
    await routable(a);
    const seen: boolean[] = [];
    p.on("request", (r: { sealed: boolean }) => seen.push(r.sealed));

    const whole = await postJson(a.url, "/v1/chat/completions", a.apiKey, chat(false));
    expect(whole.status).toBe(200);
    expect(whole.headers.get("x-provider-id")).toBe(p.providerId);
    const body = await readJson(whole);
    expect(body.choices[0].message.content).toBe(Array.from({ length: 16 }, (_, i) => `tok${i} `).join(""));
    // The provider signed the response; A, which kept the key, verified it (else no 200).
    expect(body.usage.completion_tokens).toBe(16);
    expect(timingOf(whole).forward).toBeGreaterThan(0);

    const streamed = await postJson(a.url, "/v1/chat/completions", a.apiKey, chat(true));
    expect(streamed.status).toBe(200);
    const text = await streamed.text();
    expect(text).toContain('"content":"tok15 "');
    expect(text.trim().endsWith("data: [DONE]")).toBe(true);
    expect(text.match(/data: \[DONE\]/g)).toHaveLength(1);

    // Every request reached the provider sealed (A sealed it; B relayed ciphertext).
    expect(seen.length).toBeGreaterThanOrEqual(2);
    expect(seen.every((s) => s)).toBe(true);

    // The fleet metrics: A counts what it sent, B what it received; B holds the provider's stream,
    // so only B reports it; A measured the rate of the requests it timed.
    const [onA, onB] = [
      await a.coordinator.metrics.registry.metrics(),
      await b.coordinator.metrics.registry.metrics(),
    ];
    const count = (text: string, series: string) =>
      Number(text.match(new RegExp(`^${series} (\\S+)$`, "m"))?.[1] ?? 0);
    const sent = 'darkbloom_forwarded_requests_total{direction="sent",model="fw",result="admitted"}';
    const received = 'darkbloom_forwarded_requests_total{direction="received",model="fw",result="admitted"}';
    // (The requests polled until A could route are forwarded too.)
    expect(count(onA, sent)).toBeGreaterThanOrEqual(seen.length);
    expect(count(onB, received)).toBe(count(onA, sent));
    expect(count(onA, received)).toBe(0);
    expect(count(onB, 'darkbloom_model_providers{model="fw",status="routable"}')).toBe(1);
    expect(count(onA, 'darkbloom_model_providers{model="fw",status="routable"}')).toBe(0);
    expect(count(onB, 'darkbloom_model_slots{model="fw",state="free"}')).toBe(4);
    expect(count(onA, 'darkbloom_model_decode_tokens_per_second{model="fw"}')).toBeGreaterThan(0);
  });

  it("pays the account a provider on B is linked to for what it served through A", async () => {
    const { a, b } = await replicas();
    // The owner links the machine with `darkbloom login`'s device flow (on B, where it connects).
    const owner = await b.coordinator.accounts.createAccount({ name: "owner" });
    const code = await readJson(await postJson(b.url, "/v1/device/code", undefined, {}));
    const approved = await postJson(b.url, "/v1/device/approve", owner.secret, {
      user_code: code.user_code,
    });
    expect(approved.status).toBe(200);
    const token = await readJson(
      await postJson(b.url, "/v1/device/token", undefined, { device_code: code.device_code }),
    );
    await provider(b, { accountToken: token.provider_token });
    await routable(a);
    const res = await postJson(a.url, "/v1/chat/completions", a.apiKey, chat(false));
    expect(res.status).toBe(200);
    const requestId = res.headers.get("x-request-id");
    const pool = new pg.Pool({ connectionString: a.coordinator.databaseUrl });
    started.push({ stop: () => pool.end() });
    await expect
      .poll(
        async () =>
          (
            await pool.query(
              "SELECT provider_account FROM reservations WHERE request_id = $1 AND state = 'settled'",
              [requestId],
            )
          ).rows[0]?.provider_account,
      )
      .toBe(owner.account.id);
  });

  it("serves embeddings on A from a provider on B that computes them, checked and signed", async () => {
    const { a, b } = await replicas();
    const key = newSigningKey();
    const p = await provider(b, {
      models: [{ id: "fw", contextLength: 4096, features: [ModelFeature.EMBEDDINGS] }],
      responseSigningKey: key.privateKey,
      script: () => ({ tokens: [], embeddings: { dimensions: 6 } }),
    });
    const body = { model: "fw", input: ["one", "two"] };
    await expect
      .poll(async () => (await postJson(a.url, "/v1/embeddings", a.apiKey, body)).status, { timeout: 10_000 })
      .toBe(200);
    const res = await postJson(a.url, "/v1/embeddings", a.apiKey, body);
    expect(res.headers.get("x-provider-id")).toBe(p.providerId);
    expect(timingOf(res).forward).toBeGreaterThan(0);
    const text = await res.text();
    const json = JSON.parse(text) as { data: Array<{ embedding: number[] }> };
    expect(json.data.map((d) => d.embedding)).toEqual([unitVector("one", 6), unitVector("two", 6)]);
    // Relayed by B unopened, opened and checked by A: the proof verifies, pinned to the provider's key.
    expect(
      verifyEmbeddingsResponse(text, {
        requestBody: JSON.stringify(body),
        signingKey: Buffer.from(key.publicKey).toString("base64"),
      }),
    ).toMatchObject({ ok: true, pinned: true });
  });

  it("cancels the provider's work when the consumer on A leaves mid-stream", async () => {
    const { a, b } = await replicas();
    const p = await provider(b, {
      script: () => ({ tokens: Array.from({ length: 200 }, (_, i) => `t${i} `), interTokenDelayMs: 20 }),
    });
    await routable(a);
    const cancelled = new Promise<{ reason: string }>((resolve) => p.once("cancel", resolve));
    const abort = new AbortController();
    const res = await postJson(a.url, "/v1/chat/completions", a.apiKey, chat(true, { max_tokens: 500 }), {
      signal: abort.signal,
    });
    expect(res.status).toBe(200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read(); // the first bytes
    abort.abort();
    await expect(cancelled).resolves.toMatchObject({ reason: expect.any(String) });
  });

  it("lets a forwarded stream finish when the consumer's replica shuts down", async () => {
    const { a, b } = await replicas();
    await provider(b, {
      script: () => ({ tokens: Array.from({ length: 100 }, (_, i) => `s${i} `), interTokenDelayMs: 30 }),
    });
    await routable(a);
    const res = await postJson(a.url, "/v1/chat/completions", a.apiKey, chat(true, { max_tokens: 128 }));
    expect(res.status).toBe(200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read(); // streaming
    // A stops while the stream is open: readiness goes, but the stream ends complete.
    const closed = a.coordinator.close({ drainMs: 10_000 });
    // A request arriving meanwhile is still served (forwarded), on a connection A then closes: a
    // keep-alive client's next request goes to a new connection (another replica, behind a balancer).
    const late = await new Promise<{ status: number; connection: string | undefined; body: string }>(
      (resolve, reject) => {
        const body = JSON.stringify(chat(false));
        const req = http.request(
          new URL("/v1/chat/completions", a.url),
          {
            method: "POST",
            agent: new http.Agent({ keepAlive: true }),
            headers: { "content-type": "application/json", authorization: `Bearer ${a.apiKey}` },
          },
          (res) => {
            let text = "";
            res.on("data", (d: Buffer) => {
              text += d.toString();
            });
            res.on("end", () =>
              resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: text }),
            );
          },
        );
        req.on("error", reject);
        req.end(body);
      },
    );
    expect(late.status).toBe(200);
    expect(late.connection).toBe("close");
    let text = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    await closed;
    expect(text).toContain('"content":"s99 "');
    expect(text.match(/data: \[DONE\]/g)).toHaveLength(1);
  });

  it("cuts a provider on B whose usage its text does not bear out, and B untrusts it", async () => {
    const { a, b } = await replicas();
    const liar = await provider(b, { script: () => ({ tokens: ["x "], completionTokens: 1000 }) });
    await expect
      .poll(async () => (await postJson(a.url, "/v1/chat/completions", a.apiKey, chat(false))).status, {
        timeout: 10_000,
      })
      .not.toBe(404);
    // The first request A forwards is cut on A (a usage of 1000 tokens for two bytes of text); the
    // finding reaches B, which holds the stream, marks the provider untrusted and evicts it.
    await expect
      .poll(() => b.coordinator.registry.get(liar.providerId ?? ""), { timeout: 10_000 })
      .toBeUndefined();
  });

  it("drains a provider on B through an administrator's call to A", async () => {
    const { a, b } = await replicas();
    const p = await provider(b);
    await routable(a);
    const drained = new Promise<{ reason: string }>((resolve) => p.once("drain", resolve));
    await adminClient(a.url).drainProvider({ providerId: p.providerId ?? "", reason: "maintenance" });
    await expect(drained).resolves.toMatchObject({ reason: "maintenance" });
    // Idle, it leaves B's stream at once (or is draining there): either way B routes nothing to it.
    expect(b.coordinator.registry.get(p.providerId ?? "")?.draining ?? true).toBe(true);
  });

  it("loads and unloads a model on a provider on B through an administrator's call to A", async () => {
    const { a, b } = await replicas();
    const p = await provider(b);
    await routable(a);
    const id = p.providerId ?? "";
    await adminClient(a.url).unloadProviderModel({ providerId: id, modelId: "fw" });
    await adminClient(a.url).loadProviderModel({ providerId: id, modelId: "fw" });
    expect(p.loadModels.map((c) => [c.kind, c.modelId])).toEqual([
      ["unload", "fw"],
      ["load", "fw"],
    ]);
    // The provider's refusal comes back through both replicas, with its reason.
    await expect(
      adminClient(a.url).loadProviderModel({ providerId: id, modelId: "absent" }),
    ).rejects.toMatchObject({
      code: Code.FailedPrecondition,
      rawMessage: expect.stringContaining("absent"),
    });
  });

  it("refuses peer calls without the cluster's peer token, and every peer call where none is set", async () => {
    const { b } = await replicas();
    const p = await provider(b);
    const call = async (url: string, token?: string) => {
      const client = createClient(PeerService, createConnectTransport({ baseUrl: url, httpVersion: "2" }));
      const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
      try {
        await client.untrusted(
          { providerId: p.providerId ?? "", code: "test", message: "test" },
          { headers },
        );
        return "Ok";
      } catch (e) {
        return Code[ConnectError.from(e).code];
      }
    };
    expect(await call(b.url)).toBe("Unauthenticated");
    expect(await call(b.url, "a-wrong-token-of-enough-length")).toBe("Unauthenticated");
    // A consumer's API key is not a peer credential.
    expect(await call(b.url, b.apiKey)).toBe("Unauthenticated");
    const lone = await startTestCoordinator(server.url, {}, { database: b.coordinator.databaseUrl });
    started.push({ stop: () => lone.close() });
    expect(await call(lone.url, PEER_TOKEN)).toBe("Unimplemented");
    // The provider was not touched by any of these.
    expect(b.coordinator.registry.get(p.providerId ?? "")?.draining).toBe(false);
  });
});
