import { describe, expect, it } from "vitest";
import { firstDifference, formatAgreement, GreedyAgreement } from "./agreement.js";

describe("greedy agreement", () => {
  it("finds the first differing token, a length difference included", () => {
    expect(firstDifference([1, 2, 3], [1, 2, 3])).toBeUndefined();
    expect(firstDifference([1, 2, 3], [1, 5, 3])).toBe(1);
    expect(firstDifference([1, 2], [1, 2, 3])).toBe(2);
    expect(firstDifference([], [])).toBeUndefined();
  });

  it("compares the prompts both targets ran, the first run of each", () => {
    const g = new GreedyAgreement();
    g.record("core", "p1", [1, 2, 3]);
    g.record("core", "p1", [9, 9, 9]); // a later run of the same prompt does not replace the first
    g.record("core", "p2", [4, 5, 6]);
    g.record("core", "only-core", [7]);
    g.record("mlx-lm", "p1", [1, 2, 3]);
    g.record("mlx-lm", "p2", [4, 0, 6]);
    const a = g.compare("core", "mlx-lm");
    expect(a).toEqual({ rows: 2, identical: 1, divergences: [1] });
    expect(formatAgreement("core", "mlx-lm", a)).toBe(
      "greedy tokens, core = mlx-lm: 1 of 2 rows (the others differ from token 1)",
    );
    expect(formatAgreement("core", "none", g.compare("core", "none"))).toBe(
      "core / none: no prompt ran on both",
    );
  });
});
