import { readSse, ScriptedProvider } from "@darkbloom/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { TIMING_PHASES } from "./inference/timing.js";
import {
  postJson,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
  waitFor,
} from "./testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "./testing/test-database.js";

let pg: TestPostgres;
beforeAll(async () => {
  pg = await startTestPostgres();
});
afterAll(async () => {
  await pg?.stop();
});

const chat = (extra: Record<string, unknown> = {}) => ({
  model: "tiny",
  messages: [{ role: "user", content: "Say hello" }],
  ...extra,
});

describe("serving path", () => {
  let t: TestCoordinator;
  const providers: ScriptedProvider[] = [];
  const provider = async (options: Partial<ConstructorParameters<typeof ScriptedProvider>[0]> = {}) => {
    const p = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "tiny", contextLength: 4096 }],
      ...options,
    });
    providers.push(p);
    await p.start();
    return p;
  };

  beforeAll(async () => {
    t = await startTestCoordinator(pg.url);
  });
  afterEach(async () => {
    await Promise.all(providers.splice(0).map((p) => p.stop().catch(() => undefined)));
    await waitFor(() => t.coordinator.registry.size === 0, 5_000, "providers to leave");
  });
  afterAll(async () => {
    await t?.close();
  });

  it("serves a non-streaming chat completion with OpenAI's shape and the trace headers", async () => {
    const p = await provider();
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
    expect(res.status).toBe(200);
    const body = await readJson(res);
    expect(body).toMatchObject({
      object: "chat.completion",
      model: "tiny",
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: Array.from({ length: 16 }, (_, i) => `tok${i} `).join("") },
          finish_reason: "stop",
        },
      ],
      usage: { completion_tokens: 16 },
    });
    expect(res.headers.get("x-request-id")).toMatch(/^req_/);
    expect(res.headers.get("x-provider-id")).toBe(p.providerId);
    expect(res.headers.get("x-provider-trust-level")).toBe("none");
    expect(res.headers.get("x-provider-attested")).toBe("false");
    const timing = JSON.parse(res.headers.get("x-timing") ?? "{}");
    for (const phase of TIMING_PHASES) {
      expect(typeof timing[phase]).toBe("number");
    }
    expect(timing.total).toBeGreaterThan(0);
    // The provider received the consumer's bytes unchanged and the injected token budget.
    expect(p.received[0]?.body).toEqual(chat());
    expect(p.received[0]?.maxTokens).toBeGreaterThan(0);
  });

  it("streams SSE with exactly one [DONE], role on the first delta and usage when asked", async () => {
    await provider();
    const res = await postJson(
      t.url,
      "/v1/chat/completions",
      t.apiKey,
      chat({ stream: true, stream_options: { include_usage: true } }),
    );
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    const { events } = await readSse(res);
    const data = events.map((e) => e.data);
    expect(data.filter((d) => d === "[DONE]")).toHaveLength(1);
    expect(data.at(-1)).toBe("[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    expect(chunks[0].choices[0].delta.role).toBe("assistant");
    expect(chunks.every((c) => c.object === "chat.completion.chunk" && c.id === chunks[0].id)).toBe(true);
    const text = chunks
      .flatMap((c) => c.choices.map((ch: { delta: { content?: string } }) => ch.delta.content ?? ""))
      .join("");
    expect(text).toBe(Array.from({ length: 16 }, (_, i) => `tok${i} `).join(""));
    const finish = chunks.find((c) => c.choices[0]?.finish_reason);
    expect(finish.choices[0].finish_reason).toBe("stop");
    // One last event before [DONE] with the usage and the darkbloom object (verifiable responses):
    // OpenAI's clients read the usage from the last chunk.
    const last = chunks.at(-1);
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ completion_tokens: 16 });
    expect(last.darkbloom).toMatchObject({
      provider_id: expect.stringMatching(/^prov_/),
      trust_level: "none",
    });
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
  });

  it("serves /v1/completions streamed and whole, honouring max_tokens and n", async () => {
    await provider();
    const whole = await postJson(t.url, "/v1/completions", t.apiKey, {
      model: "tiny",
      prompt: "Once",
      max_tokens: 3,
      n: 2,
    });
    const body = await readJson(whole);
    expect(body.object).toBe("text_completion");
    expect(body.choices).toHaveLength(2);
    expect(body.choices[1]).toMatchObject({ index: 1, text: "tok0 tok1 tok2 ", finish_reason: "length" });
    const streamed = await postJson(t.url, "/v1/completions", t.apiKey, {
      model: "tiny",
      prompt: "Once",
      stream: true,
      max_tokens: 2,
    });
    const { events } = await readSse(streamed);
    const chunks = events
      .slice(0, -1)
      .map((e) => JSON.parse(e.data))
      .filter((c) => c.choices.length > 0);
    expect(chunks.map((c) => c.choices[0].text).join("")).toBe("tok0 tok1 ");
    expect(chunks.at(-1).choices[0].finish_reason).toBe("length");
  });

  it("lists models from connected providers", async () => {
    await provider();
    const res = await fetch(new URL("/v1/models", t.url), {
      headers: { authorization: `Bearer ${t.apiKey}` },
    });
    const body = await readJson(res);
    expect(body.object).toBe("list");
    expect(body.data).toContainEqual(expect.objectContaining({ id: "tiny", object: "model" }));
  });

  it("routes to the provider that finishes soonest", async () => {
    const slow = await provider({ decodeTokensPerSecond: 5, heartbeatIntervalMs: 50 });
    const fast = await provider({ decodeTokensPerSecond: 500, heartbeatIntervalMs: 50 });
    await waitFor(
      () => {
        const p = t.coordinator.registry.get(fast.providerId ?? "");
        return (p?.decodeTokensPerSecond ?? 0) >= 500;
      },
      3_000,
      "heartbeat with rates",
    );
    for (let i = 0; i < 3; i++) {
      const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
      expect(res.headers.get("x-provider-id")).toBe(fast.providerId);
      await res.arrayBuffer();
    }
    expect(slow.received).toHaveLength(0);
  });

  it("queues when every slot is busy, and answers 503 with Retry-After when the wait runs out", async () => {
    const p = await provider({ maxBatch: 1, script: () => ({ tokens: ["a"], firstTokenDelayMs: 2_600 }) });
    const first = postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
    await waitFor(() => p.received.length === 1, 3_000, "first request");
    const second = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
    expect(second.status).toBe(503);
    expect(second.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(await readJson(second)).toEqual({
      error: expect.objectContaining({
        type: "service_unavailable",
        code: "model_not_available",
        param: "model",
      }),
    });
    expect((await first).status).toBe(200);
  });

  it("retries invisibly on another provider when one fails before the first byte", async () => {
    const bad = await provider({
      decodeTokensPerSecond: 1000,
      heartbeatIntervalMs: 50,
      script: () => ({
        tokens: ["x"],
        fail: {
          when: "before_first_token",
          error: { httpStatus: 500, code: "engine_crashed", message: "boom", retryable: true },
        },
      }),
    });
    const good = await provider({ decodeTokensPerSecond: 1, heartbeatIntervalMs: 50 });
    await waitFor(
      () => (t.coordinator.registry.get(bad.providerId ?? "")?.decodeTokensPerSecond ?? 0) >= 1000,
      3_000,
      "rates",
    );
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat({ stream: true }));
    expect(res.status).toBe(200);
    expect(res.headers.get("x-provider-id")).toBe(good.providerId);
    const { events } = await readSse(res);
    expect(events.at(-1)?.data).toBe("[DONE]");
    expect(bad.received).toHaveLength(1);
    expect(good.received).toHaveLength(1);
  });

  it("retries when the provider's stream drops before the first byte", async () => {
    const dropper = await provider({
      decodeTokensPerSecond: 1000,
      heartbeatIntervalMs: 50,
      script: () => ({ tokens: ["x"], fail: { when: "before_first_token", error: "disconnect" } }),
    });
    const good = await provider({ decodeTokensPerSecond: 1, heartbeatIntervalMs: 50 });
    await waitFor(
      () => (t.coordinator.registry.get(dropper.providerId ?? "")?.decodeTokensPerSecond ?? 0) >= 1000,
      3_000,
      "rates",
    );
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
    expect(res.status).toBe(200);
    expect(res.headers.get("x-provider-id")).toBe(good.providerId);
    await waitFor(
      () => t.coordinator.registry.get(dropper.providerId ?? "") === undefined,
      3_000,
      "eviction",
    );
  });

  it("waits for a provider when the only one drops before the first byte (a restart), and is served by the next", async () => {
    const dropper = await provider({
      script: () => ({ tokens: ["x"], fail: { when: "before_first_token", error: "disconnect" } }),
    });
    const pending = postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
    await waitFor(
      () =>
        dropper.received.length === 1 && t.coordinator.registry.get(dropper.providerId ?? "") === undefined,
      3_000,
      "the drop",
    );
    const next = await provider();
    const res = await pending;
    expect(res.status).toBe(200);
    expect(res.headers.get("x-provider-id")).toBe(next.providerId);
  });

  it("answers 502 at once when the only provider fails the request before the first byte", async () => {
    await provider({
      script: () => ({
        tokens: ["x"],
        fail: {
          when: "before_first_token",
          error: { httpStatus: 500, code: "engine_crashed", message: "boom", retryable: true },
        },
      }),
    });
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain("engine_crashed");
  });

  it("sends an SSE error event then [DONE] when the provider fails after the first byte", async () => {
    await provider({
      script: () => ({
        tokens: ["a", "b", "c", "d"],
        fail: { when: "after_tokens", afterTokens: 2, error: "disconnect" },
      }),
    });
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat({ stream: true }));
    expect(res.status).toBe(200);
    const { events } = await readSse(res);
    const data = events.map((e) => e.data);
    expect(data.at(-1)).toBe("[DONE]");
    expect(data.filter((d) => d === "[DONE]")).toHaveLength(1);
    const error = JSON.parse(data.at(-2) ?? "{}");
    expect(error.error).toMatchObject({ type: "provider_error", code: "provider_error" });
    expect(data.slice(0, 2).map((d) => JSON.parse(d).choices[0].delta.content)).toEqual(["a", "b"]);
  });

  it("passes a provider's client error through without retrying", async () => {
    const p = await provider({
      script: () => ({
        tokens: [],
        fail: {
          when: "before_first_token",
          error: {
            httpStatus: 400,
            code: "context_length_exceeded",
            message: "prompt too long",
            retryable: false,
          },
        },
      }),
    });
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
    expect(res.status).toBe(400);
    expect((await readJson(res)).error).toMatchObject({
      code: "context_length_exceeded",
      message: "prompt too long",
    });
    expect(p.received).toHaveLength(1);
  });

  it("cancels the provider's work when the consumer disconnects", async () => {
    const p = await provider({
      script: () => ({ tokens: Array.from({ length: 200 }, () => "t"), interTokenDelayMs: 20 }),
    });
    const ac = new AbortController();
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat({ stream: true }), {
      signal: ac.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    ac.abort();
    await waitFor(() => p.cancelled.length === 1, 3_000, "Cancel to reach the provider");
    expect(p.cancelled[0]).toBe(p.received[0]?.requestId);
    await waitFor(
      () => t.coordinator.registry.get(p.providerId ?? "")?.inFlight === 0,
      3_000,
      "slot release",
    );
  });

  it("treats a stalled provider as failed and retries elsewhere", async () => {
    await t.close();
    t = await startTestCoordinator(pg.url, { firstTokenTimeoutMs: 300 });
    const staller = await provider({
      decodeTokensPerSecond: 1000,
      heartbeatIntervalMs: 50,
      script: () => ({ tokens: ["x"], fail: { when: "before_first_token", error: "stall" } }),
    });
    const good = await provider({ decodeTokensPerSecond: 1, heartbeatIntervalMs: 50 });
    await waitFor(
      () => (t.coordinator.registry.get(staller.providerId ?? "")?.decodeTokensPerSecond ?? 0) >= 1000,
      3_000,
      "rates",
    );
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
    expect(res.status).toBe(200);
    expect(res.headers.get("x-provider-id")).toBe(good.providerId);
    await waitFor(() => staller.cancelled.length === 1, 2_000, "cancel of the stalled request");
  });

  it("evicts a provider that misses three heartbeats and retries its unanswered requests elsewhere", async () => {
    // Without heartbeats the silent provider keeps the default rate estimate, which beats 1 tok/s.
    const silent = await provider({
      sendHeartbeats: false,
      script: () => ({ tokens: Array.from({ length: 100 }, () => "s"), interTokenDelayMs: 100 }),
    });
    const healthy = await provider({ decodeTokensPerSecond: 1, heartbeatIntervalMs: 50 });
    await waitFor(
      () => (t.coordinator.registry.get(healthy.providerId ?? "")?.decodeTokensPerSecond ?? 0) === 1,
      3_000,
      "rates",
    );
    const started = Date.now();
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
    expect(res.status).toBe(200);
    expect(res.headers.get("x-provider-id")).toBe(healthy.providerId);
    expect(silent.received).toHaveLength(1);
    expect(t.coordinator.registry.get(silent.providerId ?? "")).toBeUndefined();
    // Three 1 s heartbeat intervals, not the 10 s the silent provider's answer would take.
    expect(Date.now() - started).toBeLessThan(6_000);
    await healthy.stop();
    await waitFor(() => t.coordinator.registry.size === 0, 3_000, "registry empty");
    // With no provider and no catalog entry the model is unknown again.
    const gone = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
    expect(gone.status).toBe(404);
  });

  it("honours routing preferences: allowed, excluded providers and a minimum trust level", async () => {
    const a = await provider({ decodeTokensPerSecond: 500, heartbeatIntervalMs: 50 });
    const b = await provider({ decodeTokensPerSecond: 5, heartbeatIntervalMs: 50 });
    await waitFor(
      () => (t.coordinator.registry.get(a.providerId ?? "")?.decodeTokensPerSecond ?? 0) >= 500,
      3_000,
      "rates",
    );
    const send = (headers: Record<string, string>) =>
      fetch(new URL("/v1/chat/completions", t.url), {
        method: "POST",
        headers: { authorization: `Bearer ${t.apiKey}`, "content-type": "application/json", ...headers },
        body: JSON.stringify(chat()),
      });
    const allowed = await send({ "X-Darkbloom-Providers": `${b.providerId}` });
    expect(allowed.headers.get("x-provider-id")).toBe(b.providerId);
    await allowed.arrayBuffer();
    const excluded = await send({ "X-Darkbloom-Exclude-Providers": `${a.providerId}, prov_unknown` });
    expect(excluded.headers.get("x-provider-id")).toBe(b.providerId);
    await excluded.arrayBuffer();
    const bad = await send({ "X-Darkbloom-Min-Trust-Level": "paranoid" });
    expect(bad.status).toBe(400);
    expect((await readJson(bad)).error.param).toBe("x-darkbloom-min-trust-level");
    // Scripted providers are untrusted, so nobody qualifies and the request times out in the queue.
    const strict = await send({ "X-Darkbloom-Min-Trust-Level": "hardware" });
    expect(strict.status).toBe(503);
    expect((await readJson(strict)).error.code).toBe("model_not_available");
  });
});
