// Drill: a provider that stops responding without closing its connection (SIGSTOP: a hung machine).
//
// Mid-stream the coordinator gives up after the inter-token timeout: the consumer gets an SSE error
// event and one [DONE] and pays for what it received. The frozen provider misses three heartbeats and
// is evicted, so nothing is routed to it; resumed, it reconnects by itself and serves again. Frozen
// before its first token, the first-token timeout retries the request elsewhere and the consumer sees
// only a slower answer.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestbed, type Testbed, type TestbedAccount, waitUntil } from "../testbed/index.js";
import {
  CREDIT,
  completedCharge,
  dispatchToFrozen,
  expectCleanStreamError,
  expectCompleteStream,
  expectLedgerClean,
  expectPartialCharge,
  findLongPrompt,
  greedyChat,
  HEAVY,
  type LongPrompt,
  MODEL,
  openStream,
  providerIdOf,
  providersById,
  settledUsage,
  usageRecords,
} from "./support.js";

const HEARTBEAT_MS = 1_000;
const INTER_TOKEN_TIMEOUT_MS = 2_000;
/** Shorter than eviction (3 missed heartbeats, at least 2 s after a freeze), so it is what fires. */
const FIRST_TOKEN_TIMEOUT_MS = 1_000;
/** Scheduling, a 100 ms watchdog and polling on a 2-core machine running four processes. */
const SLACK_MS = 1_500;

let tb: Testbed;
let probe: TestbedAccount;
let long: LongPrompt;

beforeAll(async () => {
  tb = await startTestbed({
    providers: [{ models: [MODEL] }, { models: [MODEL] }],
    coordinatorArgs: [
      ...[
        "--heartbeat-interval",
        `${HEARTBEAT_MS}ms`,
        "--first-token-timeout",
        `${FIRST_TOKEN_TIMEOUT_MS}ms`,
      ],
      ...["--inter-token-timeout", `${INTER_TOKEN_TIMEOUT_MS}ms`],
      ...["--instance-heartbeat", "500ms", "--instance-stale", "2s"],
    ],
  });
  probe = await tb.createAccount(CREDIT);
  long = await findLongPrompt(tb, probe.apiKey);
}, 180_000);

afterAll(async () => {
  await tb?.stop();
}, 60_000);

describe("a provider that stalls mid-stream", () => {
  it("is timed out (error event, partial charge), evicted after 3 missed heartbeats, and back after it resumes", async () => {
    const account = await tb.createAccount(CREDIT);
    const before = await tb.balance(account.id);
    const byId = await providersById(tb);

    const stream = openStream(tb, account.apiKey, greedyChat(long.prompt), { timeoutMs: 20_000 });
    const stalledId = await stream.firstContent;
    const stalled = byId.get(stalledId);
    if (!stalled) throw new Error(`no testbed provider behind ${stalledId}`);
    await stalled.pause();
    const frozenAt = performance.now();
    // Watched from the freeze on: when does the coordinator drop it, counted from its last heartbeat?
    const evicted = evictionAfterLastHeartbeat(stalledId);
    evicted.catch(() => undefined);

    try {
      // The stream ends by the inter-token timeout after the last chunk that left the provider.
      const r = await stream.done;
      const error = expectCleanStreamError(r);
      expect(error.type).toBe("provider_error");
      expect(error.message).toContain("provider_stalled");
      const silence = r.endedAt - (r.lastContentAt ?? frozenAt);
      expect(silence).toBeGreaterThanOrEqual(INTER_TOKEN_TIMEOUT_MS - 100);
      expect(silence).toBeLessThan(INTER_TOKEN_TIMEOUT_MS + SLACK_MS);
      expect(long.completion.text.startsWith(r.content)).toBe(true);
      await expectPartialCharge(tb, account, before, r, long.prompt, probe.apiKey);

      // Evicted once three heartbeats are missed, not before.
      const evictedAfter = await evicted;
      expect(evictedAfter).toBeGreaterThanOrEqual(3 * HEARTBEAT_MS);
      expect(evictedAfter).toBeLessThan(3 * HEARTBEAT_MS + SLACK_MS);

      // Not routed to while frozen: every request is served by the other provider, promptly.
      for (let i = 0; i < (HEAVY ? 10 : 3); i++) {
        const started = performance.now();
        const res = await tb.chat(probe.apiKey, greedyChat("hi", { maxTokens: 8 }), {
          signal: AbortSignal.timeout(10_000),
        });
        expect(res.status).toBe(200);
        expect(res.headers.get("x-provider-id")).not.toBe(stalledId);
        await res.text();
        expect(performance.now() - started).toBeLessThan(FIRST_TOKEN_TIMEOUT_MS);
      }
      expect(stalled.running).toBe(true);
    } finally {
      await stalled.resume();
    }

    // Resumed, it finds its stream gone, reconnects by itself, and serves again.
    await tb.waitForProviders(30_000);
    const newId = await providerIdOf(tb, stalled);
    expect(newId).not.toBe(stalledId);
    const res = await tb.chat(probe.apiKey, greedyChat("hi", { maxTokens: 8 }), {
      signal: AbortSignal.timeout(20_000),
      headers: { "x-darkbloom-providers": newId },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-provider-id")).toBe(newId);
    await res.text();

    await expectLedgerClean(tb);
  });
});

/**
 * Polls the coordinator's provider list until `providerId` is gone; resolves with how long after the
 * last heartbeat the coordinator had from it that was first seen (wall clock, one machine).
 */
async function evictionAfterLastHeartbeat(providerId: string): Promise<number> {
  let lastHeartbeatMs = 0;
  await waitUntil(
    async () => {
      const { providers } = await tb.admin.listProviders({});
      const p = providers.find((x) => x.providerId === providerId);
      if (!p) return true;
      const at = p.lastHeartbeatAt;
      if (at) lastHeartbeatMs = Number(at.seconds) * 1000 + at.nanos / 1e6;
      return false;
    },
    3 * HEARTBEAT_MS + 2 * SLACK_MS,
    `provider ${providerId} to be evicted`,
  );
  expect(lastHeartbeatMs).toBeGreaterThan(0);
  return Date.now() - lastHeartbeatMs;
}

describe("a provider that stalls before its first token", () => {
  it("is retried elsewhere after the first-token timeout, transparently", async () => {
    const account = await tb.createAccount(CREDIT);
    for (let round = 0; round < (HEAVY ? 5 : 1); round++) await stallBeforeFirstToken(account);
    await expectLedgerClean(tb);
  });
});

async function stallBeforeFirstToken(account: TestbedAccount): Promise<void> {
  const known = new Set((await usageRecords(tb, account.id)).map((x) => x.requestId));
  const before = await tb.balance(account.id);
  let sentAt = 0;
  const { frozen, frozenId, stream } = await dispatchToFrozen(tb, tb.providers, () => {
    sentAt = performance.now();
    return openStream(tb, account.apiKey, greedyChat(long.prompt, { stream: true, includeUsage: true }), {
      timeoutMs: 30_000,
    });
  });
  let r: Awaited<typeof stream.done>;
  try {
    r = await stream.done;
  } finally {
    await frozen.resume();
  }
  expectCompleteStream(r);
  expect(r.providerId).not.toBe(frozenId);
  expect(r.content).toBe(long.completion.text);
  expect(r.usage?.completion_tokens).toBe(long.completion.completionTokens);
  // The consumer waited the first-token timeout, not the eviction.
  const waited = r.headersAt - sentAt;
  expect(waited).toBeGreaterThanOrEqual(FIRST_TOKEN_TIMEOUT_MS);
  expect(waited).toBeLessThan(FIRST_TOKEN_TIMEOUT_MS + SLACK_MS);
  const log = await tb.coordinator.logTail(200);
  expect(log).toMatch(new RegExp(`"requestId":"${r.requestId}"[^\\n]*"reason":"first_token_timeout"`));

  const record = await settledUsage(tb, account.id, r.requestId);
  expect(record.outcome).toBe("completed");
  expect(record.providerAccount).not.toContain(await frozen.machineId());
  expect(record.chargedMicroUsd).toBe(
    completedCharge(r.usage?.prompt_tokens ?? 0, r.usage?.completion_tokens ?? 0),
  );
  // Requests the running provider took meanwhile are settled just after their responses ended.
  await tb.settled();
  const fresh = (await usageRecords(tb, account.id)).filter((x) => !known.has(x.requestId));
  expect(fresh.map((x) => x.outcome)).toEqual(fresh.map(() => "completed"));
  expect(before - (await tb.balance(account.id))).toBe(fresh.reduce((s, x) => s + x.chargedMicroUsd, 0n));

  // The frozen provider was cancelled, not evicted; once resumed it serves again.
  await tb.waitForProviders(30_000);
}
