import { Writable } from "node:stream";
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { createLogger } from "../log.js";
import { TIMING_PHASES, type TimingPhase } from "./timing.js";
import { TimingLog } from "./timing-log.js";

// The database side (the INSERT of unnested arrays, the usage endpoint reading it back) runs against
// real PostgreSQL in accounts/money-endpoints.test.ts; here, what happens when it does not answer.

const PHASES = Object.fromEntries(TIMING_PHASES.map((p) => [p, 1])) as Record<TimingPhase, number>;

function logged(): { log: ReturnType<typeof createLogger>; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { log: createLogger("info", sink), lines };
}

/** A pool whose queries fail while `down` is set, and that keeps what it was asked. */
function pool(state: { down: boolean; queries: { text: string; values: unknown[] }[] }): pg.Pool {
  return {
    query: async (text: string, values: unknown[]) => {
      if (state.down) throw new Error("connection refused");
      state.queries.push({ text, values });
      return { rows: [] };
    },
  } as unknown as pg.Pool;
}

describe("the request timing log", () => {
  it("writes a batch in one statement, drops what the database does not take, warns once per outage", async () => {
    const state = { down: false, queries: [] as { text: string; values: unknown[] }[] };
    const { log, lines } = logged();
    const timings = new TimingLog(pool(state), log, { batchSize: 100, maxBuffered: 25 });
    timings.record("req_a", PHASES);
    timings.record("req_b", PHASES);
    await timings.flush();
    const inserts = state.queries.filter((q) => q.text.includes("INSERT"));
    expect(inserts).toHaveLength(1);
    expect(inserts[0]?.values[0]).toEqual(["req_a", "req_b"]);

    state.down = true;
    for (let i = 0; i < 40; i++) timings.record(`req_${i}`, PHASES);
    // Bounded while the database is away: 25 held, the rest dropped at once.
    expect(timings.dropped).toBe(15);
    for (let i = 0; i < 5; i++) await timings.flush();
    expect(timings.dropped).toBe(40);
    expect(lines.filter((l) => l.includes("could not be written"))).toHaveLength(1);

    state.down = false;
    timings.record("req_back", PHASES);
    await timings.stop();
    expect(state.queries.at(-1)?.values[0]).toEqual(["req_back"]);
    expect(lines.filter((l) => l.includes("written again"))).toHaveLength(1);
  });
});
