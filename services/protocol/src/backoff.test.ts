import { describe, expect, it } from "vitest";
import { backoffDelay, backoffPolicy } from "./backoff.js";
import { RECONNECT_BACKOFF } from "./constants.js";

describe("backoffDelay", () => {
  it("doubles from 1 s to the 30 s cap by default", () => {
    const policy = backoffPolicy();
    expect(policy).toEqual(RECONNECT_BACKOFF);
    const middle = () => 0.5;
    expect([0, 1, 2, 3, 4, 5, 6, 10].map((a) => backoffDelay(policy, a, middle))).toEqual([
      1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000,
    ]);
  });

  it("adds at most ±jitter and never exceeds the cap", () => {
    const policy = backoffPolicy({ initialMs: 100, maxMs: 1_000 });
    expect(backoffDelay(policy, 0, () => 0)).toBe(80);
    expect(backoffDelay(policy, 0, () => 1)).toBe(120);
    expect(backoffDelay(policy, 9, () => 1)).toBe(1_000);
  });
});
