import { randomBytes } from "node:crypto";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import { ScriptedProvider } from "@darkbloom/testing";
import type { Pool } from "pg";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { generateApiKey } from "./accounts/api-key.js";
import {
  postJson,
  readJson,
  startTestCoordinator,
  TEST_ADMIN_KEY,
  type TestCoordinator,
} from "./testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "./testing/test-database.js";

// The attacks of issue 10 items 9 and 10 (coordinator side), against a real coordinator: label
// values a consumer chooses, /metrics open to anyone, and failed key look-ups that cost a query each.

let pg: TestPostgres;
beforeAll(async () => {
  pg = await startTestPostgres();
});
afterAll(async () => {
  await pg?.stop();
});

const METRICS_TOKEN = "metrics-token-0123456789abcdef";

function expectOpenAiError(body: unknown, type: string, code: string): void {
  expect(Object.keys(body as object)).toEqual(["error"]);
  const error = (body as { error: Record<string, unknown> }).error;
  expect(Object.keys(error).sort()).toEqual(["code", "message", "param", "type"]);
  expect(error).toMatchObject({ type, code });
}

function scrape(url: string, token?: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(new URL("/metrics", url), {
    headers: token ? { ...headers, authorization: `Bearer ${token}` } : headers,
  });
}

describe("/metrics", () => {
  let t: TestCoordinator;
  let provider: ScriptedProvider;
  beforeAll(async () => {
    t = await startTestCoordinator(pg.url, { metricsToken: METRICS_TOKEN, authFailureBurst: 3 });
    provider = new ScriptedProvider({ baseUrl: t.url, models: [{ id: "tiny", contextLength: 2048 }] });
    await provider.start();
  });
  afterAll(async () => {
    await provider?.stop();
    await t?.close();
  });

  it("never carries a model name a consumer made up (404) as a label value", async () => {
    const invented = `made-up-${randomBytes(6).toString("hex")}`;
    for (const model of [invented, "tiny"]) {
      const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, {
        model,
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 2,
      });
      expect(res.status).toBe(model === "tiny" ? 200 : 404);
      await res.arrayBuffer();
    }
    // A request is counted once its response has finished on the server, which the client may see
    // complete a moment before: read the metrics until both requests are in.
    const metrics = async () => (await scrape(t.url, METRICS_TOKEN)).text();
    await expect
      .poll(metrics)
      .toMatch(/darkbloom_requests_total\{endpoint="chat_completions",model="other",status="404"\} 1/);
    // A model a connected provider serves keeps its own series.
    await expect
      .poll(metrics)
      .toMatch(/darkbloom_requests_total\{endpoint="chat_completions",model="tiny",status="200"\} 1/);
    expect(await metrics()).not.toContain(invented);
  });

  it("answers 401 in OpenAI's shape without the token or with a wrong one, and 429 when guessed at", async () => {
    const none = await scrape(t.url);
    expect(none.status).toBe(401);
    expectOpenAiError(await readJson(none), "authentication_error", "invalid_api_key");

    const guesses: Response[] = [];
    for (let i = 0; i < 4; i++) guesses.push(await scrape(t.url, `wrong-token-${i}-0123456789`));
    expect(guesses.map((r) => r.status)).toEqual([401, 401, 401, 429]);
    expectOpenAiError(await readJson(guesses[3]!), "rate_limit_exceeded", "rate_limit_exceeded");
    expect(Number(guesses[3]!.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
  });
});

describe("/metrics on a port of its own", () => {
  let t: TestCoordinator;
  beforeAll(async () => {
    t = await startTestCoordinator(pg.url, { metricsPort: 0 });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("is served there (loopback, no token unless one is set) and not on the public port", async () => {
    const metricsUrl = t.coordinator.metricsUrl;
    expect(metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(metricsUrl).not.toBe(t.url);
    const res = await scrape(metricsUrl!);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain("darkbloom_providers_connected 0");
    expect((await scrape(t.url)).status).toBe(404);
    // The metrics listener serves nothing else.
    expect((await fetch(new URL("/v1/models", metricsUrl))).status).toBe(404);
  });
});

describe("failed API-key and admin-key look-ups", () => {
  const BURST = 5;
  let t: TestCoordinator;
  let keyQueries: () => number;
  beforeAll(async () => {
    t = await startTestCoordinator(pg.url, { authFailureBurst: BURST, authFailuresPerSecond: 1 });
    // Every key look-up is one SELECT on api_keys through the account store's pool.
    const pool = (t.coordinator.accounts as unknown as { pool: Pool }).pool;
    const query = vi.spyOn(pool, "query");
    keyQueries = () =>
      query.mock.calls.filter(([sql]) => typeof sql === "string" && sql.includes("k.key_hash = $1")).length;
  });
  afterAll(async () => {
    await t?.close();
  });

  const models = (key: string, headers: Record<string, string> = {}) =>
    fetch(new URL("/v1/models", t.url), { headers: { ...headers, authorization: `Bearer ${key}` } });

  it("are limited per address before the database: past the burst 429, no more queries, good keys kept", async () => {
    expect((await models(t.apiKey)).status).toBe(200); // cached from here on
    const before = keyQueries();

    // Well-formed keys (a malformed one is refused without a query), all distinct, sent at once,
    // each with a forged X-Forwarded-For that must not buy it a bucket of its own.
    const bad = Array.from({ length: 40 }, () => generateApiKey());
    const responses = await Promise.all(
      bad.map((key, i) => models(key, { "x-forwarded-for": `203.0.113.${i}` })),
    );
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 401)).toHaveLength(BURST);
    expect(statuses.filter((s) => s === 429)).toHaveLength(40 - BURST);
    const limited = responses.find((r) => r.status === 429)!;
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expectOpenAiError(await readJson(limited), "rate_limit_exceeded", "rate_limit_exceeded");
    expect(keyQueries() - before).toBeLessThanOrEqual(BURST);

    // The good key is still cached: served without a query, even while this address is limited.
    expect((await models(t.apiKey)).status).toBe(200);
    expect(keyQueries() - before).toBeLessThanOrEqual(BURST);

    // So is the inference path: the address's limit answers before the body is read.
    const chat = await postJson(t.url, "/v1/chat/completions", generateApiKey(), { model: "m" });
    expect(chat.status).toBe(429);
  });

  it("the admin key too: wrong ones past the burst get resource_exhausted", async () => {
    const client = (key: string) =>
      createClient(
        AdminService,
        createConnectTransport({
          baseUrl: t.url,
          httpVersion: "1.1",
          interceptors: [
            (next) => (request) => {
              request.header.set("authorization", `Bearer ${key}`);
              return next(request);
            },
          ],
        }),
      );
    // The address's bucket is already empty from the test above (1 token per second comes back).
    const codes: Code[] = [];
    for (let i = 0; i < 3; i++) {
      const error = await client(`not-the-admin-key-${i}`)
        .listAccounts({})
        .then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
      codes.push(error?.code ?? Code.Unknown);
    }
    expect(codes).toContain(Code.ResourceExhausted);
    // The real key still works from the same address: a success gives its token back.
    await new Promise((r) => setTimeout(r, 1_100));
    await expect(client(TEST_ADMIN_KEY).listAccounts({})).resolves.toBeDefined();
  });

  it("provider account tokens too: bad ones past the burst are refused before the look-up", async () => {
    const messages: string[] = [];
    for (let i = 0; i < 8; i++) {
      const p = new ScriptedProvider({
        baseUrl: t.url,
        models: [{ id: "m" }],
        accountToken: `dbp_not-a-token-${i}`,
        reconnect: false,
      });
      messages.push(
        await p.start().then(
          () => "registered",
          (e: unknown) => String(e instanceof Error ? e.message : e),
        ),
      );
      await p.stop();
    }
    expect(messages).not.toContain("registered");
    expect(messages.some((m) => /Too many failed authentication attempts/.test(m))).toBe(true);
  });
});
