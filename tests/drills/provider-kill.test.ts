// Drill: a provider daemon killed with SIGKILL, mid-stream and before its first byte.
//
// Mid-stream the consumer gets an SSE error event and one [DONE] and pays for the tokens it received
// only; the daemon's PID file is left behind, and `darkbloom serve` on the same data directory
// replaces it and serves again. Before the first byte the coordinator retries on the other provider
// of the model and the consumer never notices (and pays once).
import { processAlive } from "@darkbloom/provider";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestbed, type Testbed, type TestbedAccount, type TestbedProvider } from "../testbed/index.js";
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

let tb: Testbed;
/** Pays for the probes and replays, so the drills' accounts see only their own requests. */
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

afterAll(async () => {
  await tb?.stop();
}, 60_000);

/**
 * After a SIGKILL no exit handler ran: the PID file still names the dead process. `darkbloom serve` on
 * the same data directory replaces it, registers again (a new session id) and serves.
 */
async function restartOverStalePidFile(
  provider: TestbedProvider,
  deadPid: number,
  oldId: string,
): Promise<void> {
  expect(await provider.pidFromFile()).toBe(deadPid);
  expect(processAlive(deadPid)).toBe(false);
  provider.start();
  await tb.waitForProviders(30_000);
  expect(await provider.pidFromFile()).toBe(provider.pid);
  expect(provider.pid).not.toBe(deadPid);
  const id = await providerIdOf(tb, provider);
  expect(id).not.toBe(oldId);
  const res = await tb.chat(probe.apiKey, greedyChat("hi", { maxTokens: 8 }), {
    signal: AbortSignal.timeout(20_000),
    headers: { "x-darkbloom-providers": id },
  });
  expect(res.status).toBe(200);
  expect(res.headers.get("x-provider-id")).toBe(id);
  await res.text();
}

describe("a provider killed mid-stream", () => {
  it("ends the stream with an error event, charges only what was delivered, and restarts over its stale PID file", async () => {
    const account = await tb.createAccount(CREDIT);
    const before = await tb.balance(account.id);
    const byId = await providersById(tb);

    const stream = openStream(tb, account.apiKey, greedyChat(long.prompt), { timeoutMs: 20_000 });
    const providerId = await stream.firstContent;
    const victim = byId.get(providerId);
    if (!victim) throw new Error(`no testbed provider behind ${providerId}`);
    await victim.pause(); // frozen mid-stream: nothing more leaves it
    const pid = victim.pid!;
    await victim.kill("SIGKILL");

    const r = await stream.done;
    const error = expectCleanStreamError(r);
    expect(error.type).toBe("provider_error");
    expect(r.providerId).toBe(providerId);
    expect(r.content.length).toBeGreaterThan(0);
    // What arrived is a strict prefix of the full greedy answer.
    expect(long.completion.text.startsWith(r.content)).toBe(true);
    expect(r.content.length).toBeLessThan(long.completion.text.length);

    await expectPartialCharge(tb, account, before, r, long.prompt, probe.apiKey);

    await restartOverStalePidFile(victim, pid, providerId);
    await expectLedgerClean(tb);
  });
});

describe("a provider killed before its first byte", () => {
  it("is retried on the other provider transparently, and the consumer pays once", async () => {
    const account = await tb.createAccount(CREDIT);
    const before = await tb.balance(account.id);
    for (let round = 0; round < (HEAVY ? 5 : 1); round++) await killBeforeFirstByte(account);
    await tb.settled();
    const after = await tb.balance(account.id);
    const records = await usageRecords(tb, account.id);
    // Pays for exactly the requests that completed, once each.
    expect(before - after).toBe(records.reduce((sum, r) => sum + r.chargedMicroUsd, 0n));
    await expectLedgerClean(tb);
  });
});

/**
 * Freezes one provider, sends a request until one is routed to it (the other one serves the requests
 * routed to it meanwhile), kills it before it wrote a byte, and checks the retry on the other.
 */
async function killBeforeFirstByte(account: TestbedAccount): Promise<void> {
  const byId = await providersById(tb);
  const known = new Set((await usageRecords(tb, account.id)).map((x) => x.requestId));
  const balanceBefore = await tb.balance(account.id);
  const { frozen, frozenId, stream } = await dispatchToFrozen(tb, tb.providers, () =>
    openStream(tb, account.apiKey, greedyChat(long.prompt, { stream: true, includeUsage: true }), {
      timeoutMs: 30_000,
    }),
  );
  const pid = frozen.pid!;
  await frozen.kill("SIGKILL");
  const r = await stream.done;
  expectCompleteStream(r);
  expect(r.providerId).not.toBe(frozenId);
  expect(byId.get(r.providerId)).toBeDefined();
  expect(r.content).toBe(long.completion.text);
  expect(r.usage?.completion_tokens).toBe(long.completion.completionTokens);

  const record = await settledUsage(tb, account.id, r.requestId);
  expect(record.outcome).toBe("completed");
  // The provider that served it is paid, not the one that died.
  expect(record.providerAccount).not.toContain(await frozen.machineId());
  expect(record.completionTokens).toBe(long.completion.completionTokens);
  expect(record.chargedMicroUsd).toBe(
    completedCharge(r.usage?.prompt_tokens ?? 0, r.usage?.completion_tokens ?? 0),
  );
  // One record per request (the retry reused the reservation), each completed and paid once; the
  // others are requests the running provider took while dispatchToFrozen looked for the frozen one.
  // Requests the running provider took meanwhile are settled just after their responses ended.
  await tb.settled();
  const fresh = (await usageRecords(tb, account.id)).filter((x) => !known.has(x.requestId));
  expect(fresh.map((x) => x.outcome)).toEqual(fresh.map(() => "completed"));
  const spent = fresh.reduce((sum, x) => sum + x.chargedMicroUsd, 0n);
  expect(balanceBefore - (await tb.balance(account.id))).toBe(spent);

  await restartOverStalePidFile(frozen, pid, frozenId);
}
