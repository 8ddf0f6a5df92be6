// The load generator against an in-process coordinator (real PostgreSQL, billing and encryption on)
// with a scripted provider speaking the real protocol.
import {
  startTestCoordinator,
  startTestPostgres,
  TEST_ADMIN_KEY,
  type TestCoordinator,
  type TestPostgres,
} from "@darkbloom/coordinator/testing";
import { ScriptedProvider } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { evaluateAssertions, parseAssertion } from "./assertions.js";
import { openTarget } from "./network.js";
import { type Report, renderJson, renderText } from "./report.js";
import { type LoadRunOptions, type LoadRunResult, runLoadTest } from "./runner.js";

let pg: TestPostgres;
let t: TestCoordinator;
let provider: ScriptedProvider;
const TOKENS = Array.from({ length: 8 }, (_, i) => `t${i} `);

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url);
  provider = new ScriptedProvider({
    baseUrl: t.url,
    models: [{ id: "tiny", contextLength: 4096 }],
    maxBatch: 16,
    // max_tokens 7 asks for a provider that takes 5 s to its first token (the timeout test).
    script: (request) =>
      request.maxTokens === 7
        ? { tokens: TOKENS, firstTokenDelayMs: 5_000 }
        : { tokens: TOKENS, interTokenDelayMs: 1 },
  });
  await provider.start();
});

afterAll(async () => {
  await provider?.stop();
  await t?.close();
  await pg?.stop();
});

const base = (over: Partial<LoadRunOptions>): LoadRunOptions => ({
  baseUrl: t.url,
  apiKeys: [t.apiKey],
  model: "tiny",
  concurrency: 4,
  total: 12,
  durationMs: undefined,
  stream: true,
  promptTokens: 8,
  maxTokens: 8,
  warmup: 0,
  timeoutMs: 10_000,
  ...over,
});

function report(result: LoadRunResult, asserts: string[], stream: boolean): Report {
  return {
    scenario: {
      target: t.url,
      providers: undefined,
      users: 1,
      concurrency: 4,
      total: result.summary.totalRequests,
      durationMs: undefined,
      stream,
      model: "tiny",
      promptTokens: 8,
      maxTokens: 8,
      warmup: 0,
      timeoutMs: 10_000,
    },
    summary: result.summary,
    interrupted: result.interrupted,
    cpuPressure: result.cpuPressure,
    assertions: evaluateAssertions(asserts.map(parseAssertion), result.summary),
  };
}

describe("bench:load against a coordinator and a scripted provider", () => {
  it("streams, reads X-Timing and tokens, rotates over accounts made with the admin key", async () => {
    const target = await openTarget({
      baseUrl: `${t.url}/v1/`,
      apiKeys: [],
      adminKey: TEST_ADMIN_KEY,
      users: 3,
      providers: 1,
      model: "tiny",
      log: () => undefined,
    });
    expect(target.apiKeys).toHaveLength(3);
    expect(new Set(target.apiKeys).size).toBe(3);
    const progress: number[] = [];
    const before = provider.received.length;
    const result = await runLoadTest(
      base({
        baseUrl: target.baseUrl,
        apiKeys: target.apiKeys,
        total: 30,
        warmup: 3,
        onProgress: (p) => {
          if (p.phase === "measure") progress.push(p.done);
        },
      }),
    );
    const r = result.summary;
    expect(r.errorCounts).toEqual([]);
    expect(r).toMatchObject({ totalRequests: 30, success: 30, errors: 0, missingTiming: 0 });
    expect(result.warmupRequests).toBe(3);
    expect(provider.received.length - before).toBe(33);
    expect(r.completionTokens).toBe(30 * 8);
    expect(r.tokenThroughput).toBeGreaterThan(0);
    expect(r.providers).toEqual({ [provider.providerId as string]: 30 });
    // 33 requests over 3 keys in turn: the first 3 were the warm-up (one each), then 10 each.
    expect(r.users.map((u) => u.requests)).toEqual([10, 10, 10]);
    for (const name of [
      "total_e2e",
      "ttft",
      "parse",
      "auth",
      "reserve",
      "route",
      "queue_wait",
      "encrypt",
    ] as const) {
      expect(r.segments[name].count, name).toBe(30);
    }
    expect(r.segments.coordinator_overhead.count).toBe(30);
    expect(r.segments.inter_token.count).toBeGreaterThan(0);
    // Billing and sealing are on: their phases took time; the provider's first token came after dispatch.
    expect(r.segments.reserve.mean).toBeGreaterThan(0);
    expect(r.segments.encrypt.mean).toBeGreaterThan(0);
    expect(r.segments.provider_first_token.p50).toBeGreaterThanOrEqual(r.segments.dispatch.p50);
    expect(r.segments.ttft.p50).toBeLessThanOrEqual(r.segments.total_e2e.p50);
    expect(progress.at(-1)).toBe(30);
    // Every request had its own prompt, streamed with usage.
    const bodies = provider.received
      .slice(before)
      .map((q) => q.body as { messages: Array<{ content: string }> });
    expect(new Set(bodies.map((b) => b.messages[0]?.content)).size).toBe(33);
    expect(bodies[0]).toMatchObject({ stream: true, stream_options: { include_usage: true }, max_tokens: 8 });

    const rep = report(result, ["parse.p95<=10s", "errors<=0", "throughput>=1", "total_e2e.max<=1us"], true);
    expect(rep.assertions.map((a) => a.pass)).toEqual([true, true, true, false]);
    const text = renderText(rep);
    expect(text).toContain("streaming=true");
    expect(text).toMatch(/Latency Decomposition\nSegment +Count +Mean +P50 +P95 +P99 +Max/);
    expect(text).toMatch(/\nqueue_wait +30 /);
    expect(text).toContain("Assertion Report: FAIL");
    expect(text).toMatch(/total_e2e\.max<=1us +FAIL +max=/);
    const json = JSON.parse(JSON.stringify(renderJson(rep)));
    expect(json.summary).toMatchObject({ totalRequests: 30, success: 30 });
    expect(json.segments.parse.count).toBe(30);
    expect(json.assertions.pass).toBe(false);
    await target.close();
  });

  it("serves whole responses and counts refused keys and unknown models as errors", async () => {
    const result = await runLoadTest(base({ stream: false, apiKeys: [t.apiKey, "sk-not-a-key"], total: 10 }));
    const r = result.summary;
    expect(r).toMatchObject({ totalRequests: 10, success: 5, errors: 5, completionTokens: 5 * 8 });
    expect(r.errorCounts).toMatchObject([{ key: "401 invalid_api_key", count: 5 }]);
    expect(r.users).toEqual([
      { user: 0, requests: 5, errors: 0 },
      { user: 1, requests: 5, errors: 5 },
    ]);
    expect(r.segments.parse.count).toBe(5);
    expect(r.segments.ttft.count).toBe(0);
    expect(r.segments.coordinator_overhead.count).toBe(0);
    expect(r.segments.coordinator_total.p50).toBeGreaterThanOrEqual(r.segments.provider_first_token.p50);

    const missing = await runLoadTest(base({ model: "no-such-model", total: 4 }));
    expect(missing.summary).toMatchObject({ success: 0, errors: 4, statusCounts: { "404": 4 } });
    expect(missing.summary.errorCounts).toMatchObject([{ key: "404 model_not_found", count: 4 }]);
    const rep = report(missing, ["errors<=0"], true);
    expect(rep.assertions[0]).toMatchObject({ pass: false, actual: 4 });
    expect(renderText(rep)).toMatch(/404 model_not_found +4 +The model 'no-such-model'/);
  });

  it("counts a request past --timeout as an error", async () => {
    const started = performance.now();
    const result = await runLoadTest(base({ total: 2, concurrency: 2, timeoutMs: 300, maxTokens: 7 }));
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(result.summary).toMatchObject({ success: 0, errors: 2, statusCounts: { none: 2 } });
    expect(result.summary.errorCounts).toEqual([
      { key: "timeout", count: 2, example: "no complete response within 0.3 s" },
    ]);
  });

  it("stops at once when aborted, leaving the requests it cut out of the figures", async () => {
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 100);
    const started = performance.now();
    const result = await runLoadTest(
      base({ total: undefined, durationMs: 10_000, maxTokens: 7, signal: abort.signal }),
    );
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(result.interrupted).toBe(true);
    expect(result.summary.totalRequests).toBe(0);
  });
});
