import { create } from "@bufbuild/protobuf";
import { ModelInfoSchema } from "@darkbloom/protocol/provider/v1";
import { ScriptedProvider } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { postJson, startTestCoordinator, type TestCoordinator } from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { heartbeat } from "../testing/test-providers.js";
import { DEFAULT_DECODE_TPS, estimateCompletionSeconds } from "./cost-model.js";
import { ProviderHandle } from "./provider-handle.js";
import { FleetBaseline, ProviderPerformance } from "./provider-performance.js";

let server: TestPostgres;
let t: TestCoordinator;

beforeAll(async () => {
  server = await startTestPostgres();
  t = await startTestCoordinator(server.url);
});
afterAll(async () => {
  await t?.close();
  await server?.stop();
});

const TOKENS = Array.from({ length: 8 }, (_, i) => `w${i} `);

describe("routing on measured behaviour", () => {
  it("does not hand a provider claiming 1e9 tok/s and 4096 slots the traffic of a faster honest one", async () => {
    const liar = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "m" }],
      machineId: "m-liar",
      maxBatch: 4096,
      decodeTokensPerSecond: 1e9,
      prefillTokensPerSecond: 1e9,
      heartbeatIntervalMs: 200,
      script: () => ({ tokens: TOKENS, interTokenDelayMs: 100 }),
    });
    const honest = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "m" }],
      machineId: "m-honest",
      maxBatch: 4,
      decodeTokensPerSecond: 50,
      heartbeatIntervalMs: 200,
      script: () => ({ tokens: TOKENS, interTokenDelayMs: 2 }),
    });
    await Promise.all([liar.start(), honest.start()]);
    try {
      // The advertised rates arrive with heartbeats: wait until both have told the coordinator.
      await expect
        .poll(() => [...t.coordinator.registry.all()].filter((p) => p.decodeTokensPerSecond > 0).length)
        .toBe(2);
      // One request to each first (an allow-list), so that both are measured whatever the order: which
      // of two unmeasured providers is tried first is a coin toss (the claim buys nothing).
      for (const p of [liar, honest]) {
        const res = await postJson(
          t.url,
          "/v1/chat/completions",
          t.apiKey,
          { model: "m", messages: [{ role: "user", content: "warm up" }], max_tokens: 8 },
          {
            headers: {
              "content-type": "application/json",
              authorization: `Bearer ${t.apiKey}`,
              "x-darkbloom-providers": p.providerId ?? "",
            },
          },
        );
        expect(res.status).toBe(200);
        await res.text();
      }
      const served = new Map<string, number>();
      for (let i = 0; i < 20; i++) {
        const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, {
          model: "m",
          messages: [{ role: "user", content: `question ${i}` }],
          max_tokens: 8,
        });
        expect(res.status).toBe(200);
        await res.text();
        const id = res.headers.get("x-provider-id") ?? "";
        served.set(id, (served.get(id) ?? 0) + 1);
      }
      // Measured, the liar is seen to be slow: its claim of 1e9 tok/s wins it nothing.
      // (Ten times slower, it could still win a request only if the honest one stalled for a while.)
      expect(served.get(liar.providerId ?? "") ?? 0).toBeLessThanOrEqual(2);
      expect(served.get(honest.providerId ?? "") ?? 0).toBeGreaterThanOrEqual(18);
    } finally {
      await Promise.all([liar.stop(), honest.stop()]);
    }
  });
});

describe("routing on measured behaviour without the model's vocabulary", () => {
  it("does not make a provider that inflates its token counts within the bounds look faster", async () => {
    // Model "m" has no vocabulary: the coordinator bounds usage by the text (one token a byte at
    // most) instead of counting it. "w0 " is three bytes, so claiming three tokens a chunk passes
    // the bounds; a decode rate made of those claims would rank the inflater, 1.5 times slower,
    // twice as fast as the honest provider.
    const provider = (machineId: string, interTokenDelayMs: number, inflate: boolean) =>
      new ScriptedProvider({
        baseUrl: t.url,
        models: [{ id: "m" }],
        machineId,
        maxBatch: 4,
        heartbeatIntervalMs: 200,
        script: () => ({
          tokens: TOKENS,
          interTokenDelayMs,
          ...(inflate ? { claimedTokensPerChunk: 3, completionTokens: 3 * TOKENS.length } : {}),
        }),
      });
    const inflater = provider("m-inflater", 30, true);
    const honest = provider("m-honest-2", 20, false);
    await Promise.all([inflater.start(), honest.start()]);
    const ask = async (content: string, allow?: string) => {
      const res = await postJson(
        t.url,
        "/v1/chat/completions",
        t.apiKey,
        { model: "m", messages: [{ role: "user", content }], max_tokens: 64 },
        allow === undefined
          ? undefined
          : {
              headers: {
                "content-type": "application/json",
                authorization: `Bearer ${t.apiKey}`,
                "x-darkbloom-providers": allow,
              },
            },
      );
      expect(res.status).toBe(200);
      const body = (await res.json()) as { usage: { completion_tokens: number } };
      return { provider: res.headers.get("x-provider-id") ?? "", usage: body.usage };
    };
    try {
      // Both measured twice first; the inflated usage is within the bounds, so it is accepted.
      for (let round = 0; round < 2; round++) {
        expect((await ask("warm up", inflater.providerId ?? "")).usage.completion_tokens).toBe(24);
        expect((await ask("warm up", honest.providerId ?? "")).usage.completion_tokens).toBe(8);
      }
      const served = new Map<string, number>();
      for (let i = 0; i < 12; i++) {
        const { provider: id } = await ask(`question ${i}`);
        served.set(id, (served.get(id) ?? 0) + 1);
      }
      expect(served.get(honest.providerId ?? "") ?? 0).toBeGreaterThanOrEqual(10);
    } finally {
      await Promise.all([inflater.stop(), honest.stop()]);
    }
  });
});

describe("the cost model", () => {
  const handle = (machineId: string, decode: number, performance: ProviderPerformance) => {
    const h = new ProviderHandle({
      id: machineId,
      machineId,
      daemonVersion: "1.0.0",
      engineBackend: "scripted",
      hardware: undefined,
      models: [create(ModelInfoSchema, { id: "m" })],
      maxBatch: 4,
      maxContext: 4096,
      trustLevel: 0,
      connectedAt: 0,
      performance,
      send: () => true,
    });
    heartbeat(h, { decodeTokensPerSecond: decode });
    return h;
  };
  const demand = { model: "m", promptTokens: 10, maxTokens: 100 };

  it("clamps an advertised rate to the fleet's measured one, and lets measurements outweigh it", () => {
    const fleet = new FleetBaseline();
    const now = 1_000_000;
    const liarPerf = new ProviderPerformance(fleet, 0.15);
    const honestPerf = new ProviderPerformance(fleet, 0.15);
    const liar = handle("liar", 1e9, liarPerf);
    const honest = handle("honest", 100, honestPerf);
    // Nobody measured: a claim counts for no more than the default.
    expect(liarPerf.rate("m", "decode", 1e9, DEFAULT_DECODE_TPS, now)).toBe(DEFAULT_DECODE_TPS);
    for (let i = 0; i < 5; i++) {
      honestPerf.recordCompletion(
        { model: "m", promptTokens: 10, tokensPerChoice: 101, firstTokenMs: 10, decodeMs: 1_000, rows: 1 },
        now,
      );
    }
    // The liar's ceiling is now the fleet's 100 tok/s: it can tie the honest provider, never beat it.
    expect(estimateCompletionSeconds(liar, demand, now)).toBeGreaterThanOrEqual(
      estimateCompletionSeconds(honest, demand, now) * 0.99,
    );
    liarPerf.recordCompletion(
      { model: "m", promptTokens: 10, tokensPerChoice: 11, firstTokenMs: 10, decodeMs: 1_000, rows: 1 },
      now,
    );
    expect(estimateCompletionSeconds(liar, demand, now)).toBeGreaterThan(
      2 * estimateCompletionSeconds(honest, demand, now),
    );
  });

  it("makes a provider that fails look slower, and forgets old failures", () => {
    const fleet = new FleetBaseline();
    const perf = new ProviderPerformance(fleet, 0.15);
    const p = handle("p", 0, perf);
    const before = estimateCompletionSeconds(p, demand, 0);
    perf.recordFailure(0);
    perf.recordCompletion(
      { model: "m", promptTokens: 0, tokensPerChoice: 0, firstTokenMs: 0, decodeMs: 0, rows: 1 },
      0,
    );
    expect(estimateCompletionSeconds(p, demand, 0)).toBeCloseTo(before * 3);
    perf.recordCompletion(
      { model: "m", promptTokens: 0, tokensPerChoice: 0, firstTokenMs: 0, decodeMs: 0, rows: 1 },
      60 * 60_000,
    );
    // An hour later (six half-lives) the failure weighs little next to the fresh success.
    expect(estimateCompletionSeconds(p, demand, 60 * 60_000)).toBeLessThan(before * 1.2);
  });
});
