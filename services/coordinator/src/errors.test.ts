import { ScriptedProvider } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  postJson,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
} from "./testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "./testing/test-database.js";

let pg: TestPostgres;
let t: TestCoordinator;
let provider: ScriptedProvider;

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url, {
    bodyLimitBytes: 64 * 1024,
    rateLimitPerSecond: 1,
    rateLimitBurst: 1000,
    authCacheTtlMs: 200,
  });
  provider = new ScriptedProvider({ baseUrl: t.url, models: [{ id: "tiny", contextLength: 2048 }] });
  await provider.start();
});
afterAll(async () => {
  await provider?.stop();
  await t?.close();
  await pg?.stop();
});

async function expectError(
  res: Response,
  status: number,
  error: { type: string; code: string; param: string | null },
) {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type")).toBe("application/json");
  expect(res.headers.get("x-request-id")).toBeTruthy();
  const body = await readJson(res);
  expect(Object.keys(body)).toEqual(["error"]);
  expect(Object.keys(body.error).sort()).toEqual(["code", "message", "param", "type"]);
  expect(body.error).toMatchObject(error);
  expect(body.error.message.length).toBeGreaterThan(10);
  return body.error as { message: string };
}

const chat = { model: "tiny", messages: [{ role: "user", content: "hi" }] };

describe("every error row of the consumer API", () => {
  it("400 malformed JSON", async () => {
    await expectError(await postJson(t.url, "/v1/chat/completions", t.apiKey, "{nope"), 400, {
      type: "invalid_request_error",
      code: "invalid_json",
      param: null,
    });
  });

  it("400 bad field names the field", async () => {
    await expectError(
      await postJson(t.url, "/v1/chat/completions", t.apiKey, { ...chat, temperature: 9 }),
      400,
      {
        type: "invalid_request_error",
        code: "invalid_request_error",
        param: "temperature",
      },
    );
  });

  it("400 missing model", async () => {
    await expectError(
      await postJson(t.url, "/v1/chat/completions", t.apiKey, { messages: chat.messages }),
      400,
      {
        type: "invalid_request_error",
        code: "invalid_request_error",
        param: "model",
      },
    );
  });

  it("404 unknown model", async () => {
    const e = await expectError(
      await postJson(t.url, "/v1/chat/completions", t.apiKey, { ...chat, model: "nope" }),
      404,
      {
        type: "invalid_request_error",
        code: "model_not_found",
        param: "model",
      },
    );
    expect(e.message).toContain("nope");
  });

  it("400 context_length_exceeded before any dispatch", async () => {
    const before = provider.received.length;
    await expectError(
      await postJson(t.url, "/v1/chat/completions", t.apiKey, { ...chat, max_tokens: 5000 }),
      400,
      {
        type: "invalid_request_error",
        code: "context_length_exceeded",
        param: "messages",
      },
    );
    const long = { ...chat, messages: [{ role: "user", content: "x".repeat(4 * 3000) }] };
    await expectError(await postJson(t.url, "/v1/chat/completions", t.apiKey, long), 400, {
      type: "invalid_request_error",
      code: "context_length_exceeded",
      param: "messages",
    });
    expect(provider.received.length).toBe(before);
  });

  it("401 missing, malformed, unknown and revoked keys", async () => {
    const expected = { type: "authentication_error", code: "invalid_api_key", param: null };
    await expectError(await postJson(t.url, "/v1/chat/completions", undefined, chat), 401, expected);
    await expectError(
      await fetch(new URL("/v1/chat/completions", t.url), {
        method: "POST",
        headers: { authorization: "Basic abc" },
        body: "{}",
      }),
      401,
      expected,
    );
    await expectError(
      await postJson(t.url, "/v1/chat/completions", "dbk_not_a_real_key", chat),
      401,
      expected,
    );
    const issued = await t.coordinator.accounts.createApiKey(t.accountId, "short-lived");
    expect((await postJson(t.url, "/v1/chat/completions", issued.secret, chat)).status).toBe(200);
    await t.coordinator.accounts.revokeApiKey(issued.apiKey.id);
    // A revocation through the admin service clears the cache at once; straight through the store it
    // takes the cache TTL, so wait it out here.
    await new Promise((r) => setTimeout(r, t.coordinator.config.authCacheTtlMs + 50));
    await expectError(await postJson(t.url, "/v1/chat/completions", issued.secret, chat), 401, expected);
  });

  it("413 body over the limit, 404 unknown path, 405 wrong method", async () => {
    const big = { ...chat, messages: [{ role: "user", content: "x".repeat(70 * 1024) }] };
    await expectError(await postJson(t.url, "/v1/chat/completions", t.apiKey, big), 413, {
      type: "invalid_request_error",
      code: "request_too_large",
      param: null,
    });
    await expectError(await fetch(new URL("/v1/nothing", t.url)), 404, {
      type: "invalid_request_error",
      code: "not_found",
      param: null,
    });
    const res = await fetch(new URL("/v1/chat/completions", t.url));
    expect(res.headers.get("allow")).toBe("POST");
    await expectError(res, 405, { type: "invalid_request_error", code: "method_not_allowed", param: null });
  });

  it("429 rate_limit_exceeded with Retry-After and X-RateLimit-* headers", async () => {
    const account = await t.coordinator.accounts.createAccount({ name: "limited" });
    const limited = await startTestCoordinator(pg.url, { rateLimitPerSecond: 1, rateLimitBurst: 2 });
    const p = new ScriptedProvider({ baseUrl: limited.url, models: [{ id: "tiny" }] });
    await p.start();
    try {
      const ok = await postJson(limited.url, "/v1/chat/completions", limited.apiKey, chat);
      expect(ok.status).toBe(200);
      expect(ok.headers.get("x-ratelimit-limit")).toBe("2");
      expect(ok.headers.get("x-ratelimit-remaining")).toBe("1");
      await ok.arrayBuffer();
      await (await postJson(limited.url, "/v1/chat/completions", limited.apiKey, chat)).arrayBuffer();
      const res = await postJson(limited.url, "/v1/chat/completions", limited.apiKey, chat);
      expect(res.headers.get("retry-after")).toMatch(/^[1-9]\d*$/);
      expect(res.headers.get("x-ratelimit-remaining")).toBe("0");
      await expectError(res, 429, { type: "rate_limit_exceeded", code: "rate_limit_exceeded", param: null });
    } finally {
      await p.stop();
      await limited.close();
    }
    expect(account.secret).toBeTruthy();
  });

  it("/healthz, /readyz and /metrics answer", async () => {
    expect((await fetch(new URL("/healthz", t.url))).status).toBe(200);
    expect(await readJson(await fetch(new URL("/readyz", t.url)))).toEqual({ status: "ready" });
    const metrics = await (await fetch(new URL("/metrics", t.url))).text();
    expect(metrics).toContain("darkbloom_requests_total");
    expect(metrics).toContain("darkbloom_providers_connected 1");
  });
});
