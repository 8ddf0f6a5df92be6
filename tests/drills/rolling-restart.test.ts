// Drill: a rolling restart. Two coordinator replicas behind a balancer (a Service), two provider
// daemons connected through it, consumers sending a steady stream of requests through it; each
// replica in turn is stopped (SIGTERM) and started again.
//
// A stopping replica turns readiness off, drains its providers (they reconnect, and land on the
// other replica), serves what still reaches it (forwarded) with `Connection: close`, and lets every
// open request finish. Not one request fails, every one is charged its usage, and the ledger
// verifies.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestbed, type Testbed } from "../testbed/index.js";
import {
  CREDIT,
  completedCharge,
  expectLedgerClean,
  greedyChat,
  MODEL,
  sleep,
  usageRecords,
} from "./support.js";

let tb: Testbed;

beforeAll(async () => {
  tb = await startTestbed({
    replicas: 2,
    balanced: true,
    providers: [
      { models: [MODEL], replica: "balanced" },
      { models: [MODEL], replica: "balanced" },
    ],
    coordinatorArgs: [
      ...["--heartbeat-interval", "1s", "--first-token-timeout", "5s", "--inter-token-timeout", "5s"],
      ...["--instance-heartbeat", "500ms", "--instance-stale", "2s"],
    ],
  });
}, 180_000);

afterAll(async () => {
  await tb?.stop();
}, 60_000);

describe("a rolling restart of every replica under steady load", () => {
  it("fails no request, charges each its usage, and leaves the ledger clean", async () => {
    const account = await tb.createAccount(CREDIT);
    const before = await tb.balance(account.id);
    let stopping = false;
    const failures: string[] = [];
    const served = new Map<string, { prompt_tokens: number; completion_tokens: number }>();
    const client = async (i: number) => {
      for (let n = 0; !stopping; n++) {
        const stream = (i + n) % 2 === 0;
        try {
          const res = await tb.chat(
            account.apiKey,
            greedyChat(`client ${i} asks question ${n}`, { maxTokens: 16, stream, includeUsage: true }),
            { signal: AbortSignal.timeout(60_000) },
          );
          const body = await res.text();
          if (res.status !== 200) {
            failures.push(`${res.status}: ${body.slice(0, 200)}`);
            continue;
          }
          const usage = stream ? streamedUsage(body) : (JSON.parse(body) as { usage?: Usage }).usage;
          if (!usage || (stream && !body.trimEnd().endsWith("data: [DONE]"))) {
            failures.push(`incomplete response: ${body.slice(-200)}`);
            continue;
          }
          served.set(res.headers.get("x-request-id") ?? "", usage);
        } catch (e) {
          // undici's "fetch failed" says nothing by itself: the cause says which side closed what.
          const cause = (e as Error).cause as { code?: string; message?: string } | undefined;
          failures.push(
            `request failed: ${(e as Error).message} (${cause?.code ?? ""} ${cause?.message ?? ""})`,
          );
        }
      }
    };
    const clients = [0, 1, 2].map(client);
    await sleep(1_000);
    for (const replica of tb.replicas) {
      await replica.stop(); // SIGTERM: the graceful path
      replica.start();
      await replica.waitHealthy();
      await tb.waitForProviders(60_000);
      await sleep(1_000);
    }
    stopping = true;
    await Promise.all(clients);

    expect(failures).toEqual([]);
    expect(served.size).toBeGreaterThan(10);
    await tb.settled();
    const records = await usageRecords(tb, account.id);
    expect(records.map((r) => r.requestId).sort()).toEqual([...served.keys()].sort());
    for (const r of records) {
      const usage = served.get(r.requestId);
      expect(r.outcome).toBe("completed");
      expect(
        r.chargedMicroUsd,
        `${r.requestId}: ${r.promptTokens}+${r.completionTokens} tokens recorded, ${JSON.stringify(usage)} shown`,
      ).toBe(completedCharge(usage?.prompt_tokens ?? 0, usage?.completion_tokens ?? 0));
    }
    const spent = records.reduce((sum, r) => sum + r.chargedMicroUsd, 0n);
    expect(before - (await tb.balance(account.id))).toBe(spent);
    await expectLedgerClean(tb);
  }, 300_000);
});

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
}

/** The usage chunk of an SSE body (stream_options.include_usage). */
function streamedUsage(body: string): Usage | undefined {
  for (const line of body.split("\n")) {
    if (!line.startsWith("data: {")) continue;
    const event = JSON.parse(line.slice(6)) as { usage?: Usage | null };
    if (event.usage) return event.usage;
  }
  return undefined;
}
