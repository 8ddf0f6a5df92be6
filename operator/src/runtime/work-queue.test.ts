import { describe, expect, it } from "vitest";
import { WorkQueue } from "./work-queue.js";

const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

function deferred() {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe("WorkQueue", () => {
  it("queues a key once however often it is added, and runs one reconcile per key at a time", async () => {
    const runs: string[] = [];
    let active = 0;
    let most = 0;
    const gate = deferred();
    const queue = new WorkQueue(
      async (key) => {
        runs.push(key);
        active += 1;
        most = Math.max(most, active);
        await gate.promise;
        active -= 1;
        return undefined;
      },
      { concurrency: 4 },
    );
    queue.add("a");
    await tick();
    // Added three times while its reconcile runs: one more run after it, not three, not concurrent.
    queue.add("a");
    queue.add("a");
    queue.add("a");
    queue.add("b");
    await tick();
    expect(runs).toEqual(["a", "b"]);
    gate.resolve();
    await tick(10);
    expect(runs).toEqual(["a", "b", "a"]);
    expect(most).toBe(2);
    await queue.stop();
  });

  it("retries a failing key with growing, jittered delays and forgets its failures on success", async () => {
    const at: number[] = [];
    let failures = 3;
    const queue = new WorkQueue(
      async () => {
        at.push(performance.now());
        if (failures-- > 0) throw new Error("API server unavailable");
        return undefined;
      },
      { baseBackoffMs: 20, maxBackoffMs: 1_000 },
    );
    queue.add("k");
    await expect.poll(() => at.length, { timeout: 5_000 }).toBe(4);
    const gaps = at.slice(1).map((t, i) => t - (at[i] as number));
    // Ceilings 20, 40, 80 ms; each delay lies in the upper half of its ceiling.
    expect(gaps[0]).toBeGreaterThanOrEqual(9);
    expect(gaps[1]).toBeGreaterThanOrEqual(19);
    expect(gaps[2]).toBeGreaterThanOrEqual(39);
    await queue.stop();
  });

  it("runs a key again after the delay a reconcile asks for, and stop() cancels it", async () => {
    let runs = 0;
    const queue = new WorkQueue(async () => {
      runs += 1;
      return { requeueAfterMs: 30 };
    });
    queue.add("poll");
    await expect.poll(() => runs, { timeout: 5_000 }).toBeGreaterThanOrEqual(3);
    await queue.stop();
    const stoppedAt = runs;
    await tick(100);
    expect(runs).toBe(stoppedAt);
    queue.add("poll");
    await tick(20);
    expect(runs).toBe(stoppedAt);
  });

  it("stop() waits for the reconciles that are running", async () => {
    const gate = deferred();
    let finished = false;
    const queue = new WorkQueue(async () => {
      await gate.promise;
      finished = true;
      return undefined;
    });
    queue.add("k");
    await tick();
    const stopped = queue.stop();
    gate.resolve();
    await stopped;
    expect(finished).toBe(true);
  });
});
