import { describe, expect, it } from "vitest";
import { formatProgress } from "./progress.js";
import { describeErrorBody, parseXTiming, type RequestSample } from "./request.js";
import { summarize, summarizeRun } from "./stats.js";
import { formatMicros, parseDurationMicros } from "./units.js";
import { buildPrompt, Workload } from "./workload.js";

const timing = {
  parse: 40,
  auth: 10,
  reserve: 900,
  route: 20,
  queue: 100,
  encrypt: 45,
  forward: 0,
  dispatch: 300,
  provider_first_token: 5_000,
  total: 6_500,
};

describe("summaries", () => {
  it("gives count, mean, nearest-rank percentiles and max", () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted
    expect(summarize(values)).toEqual({ count: 100, mean: 50.5, p50: 50, p95: 95, p99: 99, max: 100 });
    expect(summarize([7])).toEqual({ count: 1, mean: 7, p50: 7, p95: 7, p99: 7, max: 7 });
    expect(summarize([]).count).toBe(0);
    expect(summarize([]).mean).toBeNaN();
  });

  it("decomposes successful requests and counts failures by key, status, provider and user", () => {
    const ok = (over: Partial<RequestSample>): RequestSample => ({
      user: 0,
      stream: true,
      status: 200,
      e2eUs: 10_000,
      gapsUs: [100, 300],
      ttftUs: 6_000,
      completionTokens: 16,
      timing,
      providerId: "prov_a",
      ...over,
    });
    const run = summarizeRun(
      [
        ok({}),
        ok({ user: 1, e2eUs: 30_000, providerId: "prov_b" }),
        ok({ user: 0, stream: false, ttftUs: undefined, gapsUs: [] }),
        ok({ user: 1, timing: undefined }),
        {
          user: 0,
          stream: true,
          status: 404,
          e2eUs: 1,
          gapsUs: [],
          error: { key: "404 model_not_found", message: "m" },
        },
        { user: 1, stream: true, status: 0, e2eUs: 1, gapsUs: [], error: { key: "timeout", message: "t" } },
        { user: 1, stream: true, status: 0, e2eUs: 1, gapsUs: [], error: { key: "timeout", message: "t2" } },
      ],
      2_000_000,
      2,
    );
    expect(run).toMatchObject({
      totalRequests: 7,
      success: 4,
      errors: 3,
      durationUs: 2_000_000,
      throughput: 2,
      completionTokens: 64,
      tokenThroughput: 32,
      missingTiming: 1,
      statusCounts: { "200": 4, "404": 1, none: 2 },
      providers: { prov_a: 3, prov_b: 1 },
      users: [
        { user: 0, requests: 3, errors: 1 },
        { user: 1, requests: 4, errors: 2 },
      ],
      errorCounts: [
        { key: "timeout", count: 2, example: "t" },
        { key: "404 model_not_found", count: 1, example: "m" },
      ],
    });
    const s = run.segments;
    expect(s.total_e2e).toMatchObject({ count: 4, max: 30_000, mean: 15_000 });
    expect(s.ttft.count).toBe(3);
    expect(s.inter_token).toMatchObject({ count: 6, p50: 100, max: 300 });
    expect(s.parse).toMatchObject({ count: 3, mean: 40 });
    expect(s.queue_wait.mean).toBe(100);
    expect(s.coordinator_total.mean).toBe(6_500);
    // total − provider_first_token − queue, for streams only: 6500 − 5000 − 100.
    expect(s.coordinator_overhead).toMatchObject({ count: 2, mean: 1_400 });
  });
});

describe("X-Timing and error bodies", () => {
  it("reads a complete X-Timing header and refuses anything else", () => {
    expect(parseXTiming(JSON.stringify(timing))).toEqual(timing);
    expect(parseXTiming(JSON.stringify({ ...timing, extra: 1 }))).toEqual(timing);
    expect(parseXTiming(JSON.stringify({ ...timing, parse: "40" }))).toBeUndefined();
    expect(parseXTiming('{"parse":1}')).toBeUndefined();
    expect(parseXTiming("not json")).toBeUndefined();
    expect(parseXTiming(undefined)).toBeUndefined();
  });

  it("keys errors by status and code, else type", () => {
    expect(
      describeErrorBody(
        "429",
        JSON.stringify({
          error: { message: "slow", type: "rate_limit_exceeded", code: "rate_limit_exceeded" },
        }),
      ),
    ).toEqual({ key: "429 rate_limit_exceeded", message: "slow" });
    expect(
      describeErrorBody("stream_error", JSON.stringify({ error: { message: "x", type: "server_error" } })),
    ).toEqual({
      key: "stream_error server_error",
      message: "x",
    });
    expect(describeErrorBody("502", "<html>bad gateway</html>").key).toBe("502 unknown");
  });
});

describe("units and workload", () => {
  it("parses and prints durations", () => {
    expect(parseDurationMicros("1.5s")).toBe(1_500_000);
    expect(parseDurationMicros("250us")).toBe(250);
    expect(parseDurationMicros("2m")).toBe(120_000_000);
    expect(parseDurationMicros("30")).toBeUndefined();
    expect(parseDurationMicros("30", "s")).toBe(30_000_000);
    expect(formatMicros(38.46)).toBe("38.5µs");
    expect(formatMicros(12_345)).toBe("12.3ms");
    expect(formatMicros(2_500_000)).toBe("2.5s");
    expect(formatMicros(Number.NaN)).toBe("-");
    expect(
      formatProgress({ phase: "measure", done: 120, errors: 1, inFlight: 4, elapsedMs: 7_500, total: 200 }),
    ).toBe("measure 120/200, 1 errors, 4 in flight, 16 req/s, 7.5s");
  });

  it("builds prompts of N words, different per request, and rotates the keys", () => {
    const a = buildPrompt(50, "0badcafe", 1);
    expect(a.split(" ")).toHaveLength(50);
    expect(buildPrompt(50, "0badcafe", 1)).toBe(a);
    expect(buildPrompt(50, "0badcafe", 2).split(" ").slice(1)).not.toEqual(a.split(" ").slice(1));
    const w = new Workload({
      model: "m",
      stream: true,
      promptTokens: 4,
      maxTokens: 3,
      apiKeys: ["k0", "k1", "k2"],
    });
    const planned = Array.from({ length: 4 }, () => w.plan());
    expect(planned.map((p) => [p.user, p.apiKey])).toEqual([
      [0, "k0"],
      [1, "k1"],
      [2, "k2"],
      [0, "k0"],
    ]);
    const body = JSON.parse(planned[0]?.body.toString() ?? "{}");
    expect(body).toMatchObject({
      model: "m",
      max_tokens: 3,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(body.messages[0].content.split(" ")).toHaveLength(4);
    const whole = new Workload({ model: "m", stream: false, promptTokens: 1, maxTokens: 1, apiKeys: ["k"] });
    expect(JSON.parse(whole.plan().body.toString())).not.toHaveProperty("stream_options");
  });
});
