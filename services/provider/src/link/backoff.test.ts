import { describe, expect, it } from "vitest";
import { backoffDelay, backoffPolicy } from "./backoff.js";

describe("reconnect backoff", () => {
  it("starts at 1 s, doubles to a 30 s cap, with ±20% jitter", () => {
    const policy = backoffPolicy();
    const mid = () => 0.5;
    expect([0, 1, 2, 3, 4, 5, 6].map((a) => backoffDelay(policy, a, mid))).toEqual([
      1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000,
    ]);
    expect(backoffDelay(policy, 0, () => 0)).toBe(800);
    expect(backoffDelay(policy, 0, () => 1)).toBe(1_200);
    expect(backoffDelay(policy, 10, () => 1)).toBe(30_000); // never above the cap
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(policy, 2);
      expect(d).toBeGreaterThanOrEqual(3_200);
      expect(d).toBeLessThanOrEqual(4_800);
    }
  });
});
