import { describe, expect, it } from "vitest";
import { measureJoin, medianJoin } from "./join.js";
import type { RowTiming } from "./stats.js";
import type { BenchRow, BenchTarget } from "./target.js";

/**
 * A target on a scripted clock: three running rows emit a token every 10 ms from t=0; the newcomer is
 * submitted when its startAfter settles (after every running row's 8th token, at t=70), and its
 * prompt pauses the running rows from t=80 to t=80+pause, when its first token arrives.
 */
function scriptedTarget(pause: number, runningEndsAt = 1000): BenchTarget {
  return {
    name: "scripted",
    async runRows(rows: readonly BenchRow[]): Promise<RowTiming[]> {
      const running = rows.slice(0, -1);
      const joining = rows[rows.length - 1] as BenchRow;
      const times: number[] = [];
      for (let t = 0; t <= 70; t += 10) times.push(t);
      for (const row of running) for (const t of times) row.onToken?.(t, 1);
      await joining.startAfter;
      const later: number[] = [80];
      for (let t = 80 + pause; t <= runningEndsAt; t += 10) later.push(t);
      for (const row of running) for (const t of later) row.onToken?.(t, 1);
      const first = 80 + pause;
      const row = (start: number, firstMs: number, last: number, tokens: number): RowTiming => ({
        promptTokens: 256,
        completionTokens: tokens,
        startMs: start,
        firstTokenMs: firstMs,
        lastTokenMs: last,
        finishReason: "length",
      });
      return [
        ...running.map(() => row(0, 0, runningEndsAt, times.length + later.length)),
        row(75, first, first + 50, 8),
      ];
    },
    close: async () => {},
  };
}

describe("measureJoin", () => {
  it("measures the newcomer's TTFT from its own submission and the running rows' longest pause", async () => {
    const join = await measureJoin(scriptedTarget(300), {
      running: ["a", "b", "c"],
      joining: "d",
      runningTokens: 100,
    });
    expect(join).toEqual({ running: 3, promptTokens: 256, ttftMs: 305, stallMs: 300, gapBeforeMs: 10 });
  });

  it("reports no stall beyond the usual gap when the running rows keep their pace", async () => {
    const join = await measureJoin(scriptedTarget(10), {
      running: ["a", "b", "c"],
      joining: "d",
      runningTokens: 100,
    });
    expect(join.stallMs).toBe(10);
    expect(join.ttftMs).toBe(15);
  });

  it("fails rather than report a join the running rows did not see", async () => {
    await expect(
      measureJoin(scriptedTarget(300, 200), { running: ["a", "b", "c"], joining: "d", runningTokens: 100 }),
    ).rejects.toMatchObject({ name: "JoinTooShortError", atLength: true });
  });

  it("takes medians field by field", () => {
    const base = { running: 3, promptTokens: 256, gapBeforeMs: 10 };
    expect(
      medianJoin([
        { ...base, ttftMs: 100, stallMs: 5 },
        { ...base, ttftMs: 300, stallMs: 50 },
        { ...base, ttftMs: 200, stallMs: 9 },
      ]),
    ).toEqual({ ...base, ttftMs: 200, stallMs: 9 });
  });
});
