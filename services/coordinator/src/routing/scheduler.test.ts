import { MemoryPressure, ThermalState, TrustLevel } from "@darkbloom/protocol/provider/v1";
import { describe, expect, it } from "vitest";
import { heartbeat, judge, occupy, testProvider } from "../testing/test-providers.js";
import { estimateCompletionSeconds } from "./cost-model.js";
import { chooseProvider } from "./scheduler.js";

const demand = { model: "m", promptTokens: 100, maxTokens: 200 };
const anyTrust = { minTrust: TrustLevel.NONE };

describe("chooseProvider", () => {
  it("prefers the provider that finishes soonest (measured decode rate)", () => {
    const slow = testProvider({ id: "slow", decode: 10 });
    const fast = testProvider({ id: "fast", decode: 100 });
    expect(chooseProvider([slow, fast], demand, anyTrust)?.id).toBe("fast");
  });

  it("accounts for batch degradation: an idle slower provider can beat a busy faster one", () => {
    const busy = testProvider({ id: "busy", decode: 60, maxBatch: 8 });
    occupy(busy, 7);
    const idle = testProvider({ id: "idle", decode: 40, maxBatch: 8 });
    expect(estimateCompletionSeconds(busy, demand)).toBeGreaterThan(estimateCompletionSeconds(idle, demand));
    expect(chooseProvider([busy, idle], demand, anyTrust)?.id).toBe("idle");
  });

  it("charges a cold model load", () => {
    const cold = testProvider({ id: "cold", decode: 100 });
    heartbeat(cold, { loadedModels: [] });
    const warm = testProvider({ id: "warm", decode: 60 });
    expect(chooseProvider([cold, warm], demand, anyTrust)?.id).toBe("warm");
  });

  it("penalises memory pressure and thermal throttling", () => {
    const hot = testProvider({ id: "hot", decode: 50 });
    heartbeat(hot, { thermalState: ThermalState.CRITICAL });
    const pressed = testProvider({ id: "pressed", decode: 50 });
    heartbeat(pressed, { memoryPressure: MemoryPressure.CRITICAL });
    const fine = testProvider({ id: "fine", decode: 40 });
    expect(chooseProvider([hot, pressed, fine], demand, anyTrust)?.id).toBe("fine");
  });

  it("skips full, draining, excluded, untrusted and too-small providers", () => {
    const full = testProvider({ id: "full", maxBatch: 1 });
    occupy(full, 1);
    const draining = testProvider({ id: "draining" });
    draining.markDraining();
    const excluded = testProvider({ id: "excluded" });
    const small = testProvider({ id: "small", contextLength: 250 });
    const ok = testProvider({ id: "ok", decode: 1 });
    expect(
      chooseProvider([full, draining, excluded, small, ok], demand, {
        ...anyTrust,
        exclude: new Set(["excluded"]),
      })?.id,
    ).toBe("ok");
    const untrusted = testProvider({ id: "untrusted", trust: TrustLevel.NONE });
    expect(chooseProvider([untrusted], demand, { minTrust: TrustLevel.SELF_SIGNED })).toBeUndefined();
  });

  it("routes above trust none only to providers with a fresh passed challenge, never to de-routed ones", () => {
    const selfSigned = { minTrust: TrustLevel.SELF_SIGNED };
    const stale = testProvider({ id: "stale", trust: TrustLevel.SELF_SIGNED });
    expect(chooseProvider([stale], demand, selfSigned)).toBeUndefined();
    expect(chooseProvider([stale], demand, anyTrust)?.id).toBe("stale");
    judge(stale, { attestedUntil: Date.now() - 1 });
    expect(chooseProvider([stale], demand, selfSigned)).toBeUndefined();
    const fresh = testProvider({ id: "fresh", trust: TrustLevel.SELF_SIGNED });
    judge(fresh, { attestedUntil: Date.now() + 60_000 });
    expect(chooseProvider([stale, fresh], demand, selfSigned)?.id).toBe("fresh");
    expect(chooseProvider([fresh], demand, { minTrust: TrustLevel.HARDWARE })).toBeUndefined();
    judge(fresh, { deRouted: true });
    expect(chooseProvider([fresh], demand, selfSigned)).toBeUndefined();
    expect(chooseProvider([fresh], demand, anyTrust)).toBeUndefined();
  });

  it("breaks near-ties by queue depth, then at random", () => {
    const a = testProvider({ id: "a", decode: 50 });
    const b = testProvider({ id: "b", decode: 51 });
    heartbeat(b, { queueDepth: 2 });
    expect(chooseProvider([a, b], demand, anyTrust)?.id).toBe("a");
    const c = testProvider({ id: "c", decode: 50 });
    const d = testProvider({ id: "d", decode: 50 });
    expect(chooseProvider([c, d], demand, anyTrust, () => 0)?.id).toBe("c");
    expect(chooseProvider([c, d], demand, anyTrust, () => 0.99)?.id).toBe("d");
  });

  it("returns undefined when nobody has room", () => {
    const p = testProvider({ maxBatch: 2 });
    occupy(p, 2);
    expect(chooseProvider([p], demand, anyTrust)).toBeUndefined();
  });
});
