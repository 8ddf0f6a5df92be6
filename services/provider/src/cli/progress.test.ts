import { describe, expect, it } from "vitest";
import { progressLine } from "./progress.js";

describe("progress line", () => {
  it("draws a bar with percent, sizes and speed", () => {
    expect(progressLine({ received: 512 * 1024, total: 1024 * 1024, resumedFrom: 0 }, 1000, 10)).toBe(
      "[#####-----]  50%  512.0 KiB / 1.0 MiB  512.0 KiB/s",
    );
    expect(progressLine({ received: 2048, total: undefined, resumedFrom: 0 }, 1000)).toBe(
      "2.0 KiB  2.0 KiB/s",
    );
  });
});
