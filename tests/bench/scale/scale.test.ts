// The scale drills at CI size (the mechanism: simulated providers in their own process, heartbeats at
// the coordinator's interval, no eviction, requests routed among them; concurrent paced streams all
// complete). DARKBLOOM_HEAVY_TESTS=1 also runs the full sizes of `npm run bench:scale`.
// The drills fork compiled children from tests/dist: `npm test` builds first (or run `npx tsc -b`).
import { startTestPostgres, type TestPostgres } from "@darkbloom/coordinator/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Check } from "./figures.js";
import { PROVIDER_DRILL_DEFAULTS, runProviderDrill } from "./provider-drill.js";
import { runStreamDrill, streamDrillDefaults } from "./stream-drill.js";

const HEAVY = process.env.DARKBLOOM_HEAVY_TESTS === "1";

/** Checks that must hold whatever else loads the machine (timing margins are asserted separately). */
function failedChecks(checks: Check[], ignore: string[] = []): Check[] {
  return checks.filter((c) => !c.ok && !ignore.some((name) => c.name.startsWith(name)));
}
const TIMING_MARGINS = ["heartbeats applied keep up", "every provider heard from within"];

describe("scale drills", () => {
  let pg: TestPostgres;
  beforeAll(async () => {
    pg = await startTestPostgres();
  });
  afterAll(async () => {
    await pg?.stop();
  });

  it("1,000 providers heartbeating every second for 3 periods: none evicted, requests still routed", async () => {
    const r = await runProviderDrill({
      ...PROVIDER_DRILL_DEFAULTS,
      databaseUrl: pg.url,
      providers: 1_000,
      heartbeatIntervalMs: 1_000,
      steadyPeriods: 3,
      idleWindowMs: 500,
      providersPerSwarm: 1_000,
      streamsPerConnection: 250,
      registerConcurrency: 250,
      routedProviders: 8,
      requests: 20,
    });
    expect(failedChecks(r.checks, TIMING_MARGINS)).toEqual([]);
    expect(r.registration.registered).toBe(1_000);
    expect(r.steady.connectedSamples).toEqual([1_000, 1_000, 1_000, 1_000]);
    expect(r.evictions).toEqual({});
    expect(r.connections).toBe(4); // 250 provider streams per HTTP/2 connection
    // About 1,000 heartbeats a second were applied (loosely: other tests share the cores).
    expect(r.steady.heartbeatsApplied).toBeGreaterThan(0.7 * 3 * 1_000);
    expect(r.steady.maxHeartbeatAgeMs).toBeLessThan(3 * 1_000);
    expect(r.routing.map((x) => x.candidates)).toEqual([8, 8, 8, 1_000]);
  }, 90_000);

  it("200 simultaneous paced streams all complete with every token and one [DONE]", async () => {
    const r = await runStreamDrill({ ...streamDrillDefaults(200), databaseUrl: pg.url });
    expect(r.checks.filter((c) => !c.ok)).toEqual([]);
    expect(r.completed).toBe(200);
    expect(r.errors + r.hung).toBe(0);
    expect(r.peakOpen).toBe(200);
    expect(r.queueMicros.max).toBe(0); // 2 providers × 128 slots: nobody queued
    // Paced for real: no stream can finish before its 20 tokens 50 ms apart were generated. (The gaps
    // themselves depend on what else runs: a busy coordinator writes tokens that queued up together.)
    expect(r.wallMs).toBeGreaterThanOrEqual(r.scriptedMs);
    expect(r.interTokenGapMs.count).toBe(200 * 19);
  }, 90_000);

  describe.runIf(HEAVY)("full size (DARKBLOOM_HEAVY_TESTS=1)", () => {
    it("10,000 providers heartbeating every 5 s", async () => {
      const r = await runProviderDrill({ ...PROVIDER_DRILL_DEFAULTS, databaseUrl: pg.url });
      expect(r.checks.filter((c) => !c.ok)).toEqual([]);
      expect(r.steady.connectedSamples.every((c) => c === 10_000)).toBe(true);
    }, 600_000);

    it("1,000 simultaneous streams", async () => {
      const r = await runStreamDrill({ ...streamDrillDefaults(1_000), databaseUrl: pg.url });
      expect(r.checks.filter((c) => !c.ok)).toEqual([]);
    }, 300_000);
  });
});
