// Drill: the coordinator SIGKILLed while several consumers stream.
//
// Every consumer's connection ends at once (none hangs); the coordinator restarts on the same
// database; the provider daemons reconnect by themselves; the dead instance's open reservations are
// refunded by the new one once the old one is presumed dead (--instance-stale), so the ledger
// verifies with no open reservation and every balance is its credit less what was settled; and new
// requests are served.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestbed, type Testbed, type TestbedAccount } from "../testbed/index.js";
import {
  CREDIT,
  expectCompleteStream,
  expectLedgerClean,
  findLongPrompt,
  greedyChat,
  HEAVY,
  type LongPrompt,
  MODEL,
  type OpenStream,
  openStream,
  type StreamResult,
  usageRecords,
} from "./support.js";

const OTHER_MODEL = "tiny-llama";
const INSTANCE_STALE_MS = 2_000;

let tb: Testbed;
let probe: TestbedAccount;
const prompts = new Map<string, LongPrompt>();

beforeAll(async () => {
  tb = await startTestbed({
    providers: [{ models: [MODEL] }, { models: [MODEL] }, { models: [OTHER_MODEL] }],
    coordinatorArgs: [
      ...["--heartbeat-interval", "1s", "--first-token-timeout", "3s", "--inter-token-timeout", "2s"],
      ...["--instance-heartbeat", "500ms", "--instance-stale", `${INSTANCE_STALE_MS}ms`],
    ],
  });
  probe = await tb.createAccount(CREDIT);
  prompts.set(MODEL, await findLongPrompt(tb, probe.apiKey, 500, MODEL));
  prompts.set(OTHER_MODEL, await findLongPrompt(tb, probe.apiKey, 300, OTHER_MODEL));
}, 180_000);

afterAll(async () => {
  await tb?.stop();
}, 60_000);

interface Consumer {
  account: TestbedAccount;
  stream: OpenStream;
}

describe("the coordinator killed while streams are open", () => {
  it("ends every consumer's connection, recovers their reservations on restart, and serves again", async () => {
    for (let round = 0; round < (HEAVY ? 3 : 1); round++) await killWhileStreaming(HEAVY ? 8 : 4);
  });
});

async function killWhileStreaming(consumers: number): Promise<void> {
  const pids = tb.providers.map((p) => p.pid);
  const models = Array.from({ length: consumers }, (_, i) => (i % 4 === 3 ? OTHER_MODEL : MODEL));
  const open: Consumer[] = [];
  for (const model of models) {
    const account = await tb.createAccount(CREDIT);
    const { prompt } = prompts.get(model)!;
    open.push({
      account,
      stream: openStream(tb, account.apiKey, greedyChat(prompt, { model }), { timeoutMs: 30_000 }),
    });
  }
  await Promise.all(open.map((c) => c.stream.firstContent));
  // The drill is about streams that are open: every one had its first token and none has ended.
  const stillOpen = open.filter((c) => !c.stream.ended).length;
  const killedAt = performance.now();
  await tb.coordinator.kill("SIGKILL");
  expect(stillOpen).toBe(consumers);

  // Every consumer sees its connection end (no [DONE], the body cut), promptly.
  const results: StreamResult[] = await Promise.all(open.map((c) => c.stream.done));
  for (const r of results) {
    expect(r.status).toBe(200);
    expect(r.doneCount).toBe(0);
    expect(r.readError).toBeDefined();
    expect(r.endedAt - killedAt).toBeLessThan(2_000);
  }

  // Restarted on the same database and port; the daemons reconnect by themselves (same processes).
  tb.coordinator.start();
  await tb.coordinator.waitHealthy(60_000);
  await tb.waitForProviders(60_000);
  expect(tb.providers.map((p) => p.pid)).toEqual(pids);

  // The dead instance's reservations are refunded once it is presumed dead (--instance-stale).
  await expectLedgerClean(tb, INSTANCE_STALE_MS + 15_000);
  for (const [i, c] of open.entries()) {
    const records = await usageRecords(tb, c.account.id);
    expect(records.map((r) => r.requestId)).toEqual([results[i]!.requestId]);
    expect(records[0]).toMatchObject({ outcome: "recovered", chargedMicroUsd: 0n });
    const settled = records.reduce((sum, r) => sum + r.chargedMicroUsd, 0n);
    expect(await tb.balance(c.account.id)).toBe(CREDIT - settled);
  }

  // New requests work, on every model.
  const account = await tb.createAccount(CREDIT);
  for (const model of new Set(models)) {
    const r = await openStream(tb, account.apiKey, greedyChat("hi", { model, maxTokens: 16 }), {
      timeoutMs: 20_000,
    }).done;
    expectCompleteStream(r);
  }
  await expectLedgerClean(tb);
}
