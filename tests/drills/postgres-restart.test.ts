// Drill: PostgreSQL stopped under the coordinator, while the network is idle and while streams run.
//
// Requests that need the database during the outage (authentication of an uncached key, the
// reservation every inference request makes) get a clean OpenAI-shaped 503 promptly; the
// coordinator stays up; streams already paid for run to their end; once PostgreSQL is back, requests
// succeed again within a bounded time, and every request is settled: the ledger verifies with no open
// reservation and every balance is its credit less what its requests were charged.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startTestbed, type Testbed, type TestbedAccount, waitUntil } from "../testbed/index.js";
import {
  CREDIT,
  completedCharge,
  expectCompleteStream,
  expectLedgerClean,
  expectOpenAiErrorShape,
  findLongPrompt,
  greedyChat,
  HEAVY,
  type LongPrompt,
  MODEL,
  openStream,
  providersById,
  settledUsage,
  usageRecords,
} from "./support.js";

/** How long the coordinator may take to serve again once PostgreSQL is back. */
const RECOVERY_MS = 15_000;
/** A request during the outage must be answered this fast (no hang on a dead database). */
const OUTAGE_ANSWER_MS = 5_000;

let tb: Testbed;
let probe: TestbedAccount;
let long: LongPrompt;

beforeAll(async () => {
  tb = await startTestbed({
    providers: [{ models: [MODEL] }, { models: [MODEL] }],
    coordinatorArgs: [
      ...["--heartbeat-interval", "1s", "--first-token-timeout", "3s", "--inter-token-timeout", "2s"],
      ...["--instance-heartbeat", "500ms", "--instance-stale", "2s"],
    ],
  });
  probe = await tb.createAccount(CREDIT);
  long = await findLongPrompt(tb, probe.apiKey);
}, 180_000);

afterEach(async () => {
  // Whatever a failed drill left behind, the next one starts with a database and running providers.
  await tb?.postgres.start();
  for (const p of tb?.providers ?? []) await p.resume();
}, 60_000);

afterAll(async () => {
  await tb?.stop();
}, 60_000);

interface Answer {
  status: number;
  error: unknown;
  ms: number;
}

/** One request during the outage: must be answered (not hang) with a JSON error body. */
async function askDuringOutage(apiKey: string, stream: boolean): Promise<Answer> {
  const started = performance.now();
  const res = await tb.chat(apiKey, greedyChat("hi", { maxTokens: 8, stream }), {
    signal: AbortSignal.timeout(OUTAGE_ANSWER_MS + 5_000),
  });
  const text = await res.text();
  const ms = performance.now() - started;
  let error: unknown;
  try {
    error = (JSON.parse(text) as { error?: unknown }).error;
  } catch {
    error = text;
  }
  return { status: res.status, error, ms };
}

/** The outage answer every request gets: 503 in OpenAI's shape, promptly, the coordinator still up. */
function expectUnavailable(a: Answer): void {
  expect(a.status, JSON.stringify(a.error)).toBe(503);
  expectOpenAiErrorShape(a.error);
  expect((a.error as { type: string }).type).toBe("service_unavailable");
  expect(a.ms).toBeLessThan(OUTAGE_ANSWER_MS);
}

/** One successful request, so the coordinator has the key's authentication cached. */
async function warm(apiKey: string): Promise<void> {
  const res = await tb.chat(apiKey, greedyChat("hi", { maxTokens: 8 }), {
    signal: AbortSignal.timeout(20_000),
  });
  await res.text();
  expect(res.status).toBe(200);
}

/** Polls until a request succeeds after PostgreSQL came back; returns how long that took. */
async function servedAgain(apiKey: string): Promise<number> {
  const started = performance.now();
  await waitUntil(
    async () => {
      const res = await tb.chat(apiKey, greedyChat("hi", { maxTokens: 8 }), {
        signal: AbortSignal.timeout(10_000),
      });
      await res.text();
      return res.status === 200;
    },
    RECOVERY_MS,
    "a request to succeed after PostgreSQL restarted",
    [tb.coordinator],
  );
  return performance.now() - started;
}

describe("PostgreSQL stopped while the network is idle", () => {
  it("answers 503 during the outage, stays up, and serves again once it is back", async () => {
    const pid = tb.coordinator.pid;
    // One key the coordinator has seen (its authentication is cached), one it has not.
    const seen = await tb.createAccount(CREDIT);
    const unseen = await tb.createAccount(CREDIT);
    await warm(seen.apiKey);

    await tb.postgres.stop();
    for (let i = 0; i < (HEAVY ? 5 : 1); i++) {
      expectUnavailable(await askDuringOutage(seen.apiKey, false));
      expectUnavailable(await askDuringOutage(seen.apiKey, true));
      expectUnavailable(await askDuringOutage(unseen.apiKey, false));
      expectUnavailable(await askDuringOutage(unseen.apiKey, true));
    }
    expect(tb.coordinator.running).toBe(true);
    expect(tb.coordinator.pid).toBe(pid);

    await tb.postgres.start();
    expect(await servedAgain(unseen.apiKey)).toBeLessThan(RECOVERY_MS);
    expect(tb.coordinator.pid).toBe(pid);

    // Refused requests cost nothing; the requests that succeeded were charged once.
    await tb.settled();
    for (const account of [seen, unseen]) {
      const records = await usageRecords(tb, account.id);
      expect(records.every((r) => r.outcome === "completed")).toBe(true);
      const spent = records.reduce((sum, r) => sum + r.chargedMicroUsd, 0n);
      expect(await tb.balance(account.id)).toBe(CREDIT - spent);
    }
    expect(await tb.balance(seen.id)).toBeLessThan(CREDIT);
    await expectLedgerClean(tb);
  });
});

describe("PostgreSQL stopped while streams run", () => {
  it("lets paid-for streams finish, settles them once it is back, and refuses new requests meanwhile", async () => {
    const pid = tb.coordinator.pid;
    const byId = await providersById(tb);
    const consumers = await Promise.all(
      Array.from({ length: HEAVY ? 6 : 3 }, () => tb.createAccount(CREDIT)),
    );
    // Warm the authentication cache of the outage probe.
    const late = await tb.createAccount(CREDIT);
    await warm(late.apiKey);

    const streams = consumers.map((c) =>
      openStream(tb, c.apiKey, greedyChat(long.prompt, { stream: true, includeUsage: true }), {
        timeoutMs: 60_000,
      }),
    );
    // Freeze every provider once each stream has its first token, so the streams are still running
    // when the database goes away and finish (and settle) during the outage.
    const serving = new Set(await Promise.all(streams.map((s) => s.firstContent)));
    const frozen = [...serving].map((id) => byId.get(id)!);
    for (const p of frozen) await p.pause();
    await tb.postgres.stop();
    for (const p of frozen) await p.resume();

    // New requests are refused while the database is gone; the running streams are not disturbed.
    expectUnavailable(await askDuringOutage(late.apiKey, true));
    const results = await Promise.all(streams.map((s) => s.done));
    for (const r of results) {
      expectCompleteStream(r);
      expect(r.content).toBe(long.completion.text);
    }
    // Settlement could not reach the database; it must not be lost. Hold the outage a little longer
    // than the coordinator's own settlement retries.
    await new Promise((r) => setTimeout(r, 1_000));
    expect(tb.coordinator.pid).toBe(pid);

    await tb.postgres.start();
    expect(await servedAgain(probe.apiKey)).toBeLessThan(RECOVERY_MS);

    // Every stream is settled exactly once at its usage, and nothing stays open.
    for (const [i, r] of results.entries()) {
      const record = await settledUsage(tb, consumers[i]!.id, r.requestId, RECOVERY_MS);
      expect(record.outcome).toBe("completed");
      expect(record.chargedMicroUsd).toBe(
        completedCharge(r.usage?.prompt_tokens ?? 0, r.usage?.completion_tokens ?? 0),
      );
      expect(await tb.balance(consumers[i]!.id)).toBe(CREDIT - record.chargedMicroUsd);
    }
    await expectLedgerClean(tb, RECOVERY_MS);
    expect(tb.coordinator.pid).toBe(pid);
  });
});
