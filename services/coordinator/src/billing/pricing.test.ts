import { describe, expect, it } from "vitest";
import { completedCharge, cost, dollars, MIN_CHARGE_MICRO_USD, worstCase } from "./pricing.js";

const price = { inputMicroUsdPerMillion: 150_000n, outputMicroUsdPerMillion: 600_000n };

describe("pricing", () => {
  it("rounds every cost up to the next micro-USD", () => {
    expect(cost(price, 1, 0)).toBe(1n); // 0.15 µUSD
    expect(cost(price, 1_000_000, 1_000_000)).toBe(750_000n);
    expect(cost(price, 3, 7)).toBe(5n); // 0.45 + 4.2 = 4.65
  });

  it("reserves the worst case over every choice and the prompt's token bound, at least the minimum", () => {
    // A prompt bound of 4016 tokens: 602.4 + 1200 µUSD, rounded up.
    expect(worstCase(price, 4016, 1000, 2)).toBe(603n + 1200n);
    expect(worstCase(price, 1, 1, 1)).toBe(MIN_CHARGE_MICRO_USD);
  });

  it("covers any accepted completed charge with the reservation", () => {
    for (const bound of [1, 10, 333, 5000]) {
      for (const maxTokens of [1, 16, 4096]) {
        expect(completedCharge(price, bound, maxTokens)).toBeLessThanOrEqual(
          worstCase(price, bound, maxTokens, 1),
        );
      }
    }
  });

  it("charges at least the minimum for a completed request", () => {
    expect(completedCharge(price, 10, 10)).toBe(MIN_CHARGE_MICRO_USD);
    expect(completedCharge(price, 100_000, 100_000)).toBe(75_000n);
  });

  it("formats dollars", () => {
    expect(dollars(1_234_567n)).toBe("$1.234567");
    expect(dollars(-5n)).toBe("-$0.000005");
  });
});
