// Drill: two coordinator replicas on one PostgreSQL, the consumer on A and the only provider on B, so
// every request is forwarded A → B over PeerService.Forward.
//
// The hop carries ciphertext only. B SIGKILLed mid-stream: the consumer on A gets an SSE error event
// and one [DONE] and pays for the tokens it received only; B restarts, the daemon reconnects to it,
// and A forwards again. A SIGKILLed mid-stream: the consumer's connection ends, B cancels the
// provider's work (its slot frees), A restarts and serves, and the dead instance's reservation is
// refunded. The ledger verifies after each.
import { readFile } from "node:fs/promises";
import { isDeepStrictEqual } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  startTestbed,
  type Testbed,
  type TestbedAccount,
  type TestbedCoordinator,
  type TestbedProvider,
  waitUntil,
} from "../testbed/index.js";
import {
  CREDIT,
  expectCleanStreamError,
  expectCompleteStream,
  expectLedgerClean,
  expectPartialCharge,
  findLongPrompt,
  greedyChat,
  type LongPrompt,
  MODEL,
  openStream,
  settledUsage,
} from "./support.js";

let tb: Testbed;
let probe: TestbedAccount;
let long: LongPrompt;

beforeAll(async () => {
  tb = await startTestbed({
    replicas: 2,
    tapPeers: true,
    providers: [{ models: [MODEL], replica: 1, tap: true }],
    coordinatorArgs: [
      ...["--heartbeat-interval", "1s", "--first-token-timeout", "3s", "--inter-token-timeout", "2s"],
      ...["--instance-heartbeat", "500ms", "--instance-stale", "2s"],
    ],
  });
  probe = await tb.createAccount(CREDIT);
  // Served through the hop: A has no provider of its own.
  long = await findLongPrompt(tb, probe.apiKey);
}, 180_000);

afterAll(async () => {
  await tb?.stop();
}, 60_000);

const [A, B] = [0, 1];

/** Waits until replica A routes the model again (its directory view has B's provider). */
async function servedThroughA(): Promise<void> {
  await waitUntil(
    async () => {
      try {
        const res = await tb.chat(probe.apiKey, greedyChat("hi", { maxTokens: 4 }), {
          signal: AbortSignal.timeout(20_000),
        });
        await res.text();
        return res.status === 200;
      } catch {
        return false; // a request that timed out: try again
      }
    },
    60_000,
    "replica A to serve through B again",
    [...tb.replicas],
  );
}

describe("a consumer on replica A, the provider on replica B", () => {
  it("is served through the hop, which carries only ciphertext", async () => {
    const secret = `forwarded-secret-${Date.now()}`;
    const stream = openStream(
      tb,
      probe.apiKey,
      greedyChat(`The password is ${secret}. Repeat it.`, { stream: true, maxTokens: 24 }),
    );
    const r = await stream.done;
    expectCompleteStream(r);
    const answer = r.content.trim();
    expect(answer.length).toBeGreaterThan(8);
    const peer = tb.peerTaps[B]?.captured();
    const provider = tb.providers[0]?.tap?.captured();
    if (!peer || !provider) throw new Error("the testbed has no taps");
    // The request crossed both wires (sealed), and the answer came back over both (sealed).
    expect(peer.toProvider.length).toBeGreaterThan(secret.length);
    expect(peer.fromProvider.length).toBeGreaterThan(answer.length);
    for (const bytes of [peer.toProvider, peer.fromProvider, provider.toProvider, provider.fromProvider]) {
      expect(bytes.includes(secret)).toBe(false);
      expect(bytes.includes(answer)).toBe(false);
    }
    for (const c of tb.replicas) expect(await readFile(c.logFile, "utf8"), c.name).not.toContain(secret);
  });

  it("answers alike from either replica: models, attestations and the admin listing", async () => {
    const read = async (url: string, path: string) => {
      const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${probe.apiKey}` } });
      expect(res.status).toBe(200);
      return res.json();
    };
    // Read until both agree: a challenge passed between the two reads changes the holder's entry
    // a flush period before the other replica sees it.
    for (const path of ["/v1/models", "/v1/providers/attestation"]) {
      await expect
        .poll(
          async () => {
            const [a, b] = await Promise.all(tb.replicas.map((c) => read(c.url, path)));
            return isDeepStrictEqual(a, b); // key order aside (the directory's jsonb sorts keys)
          },
          { timeout: 10_000, interval: 200 },
        )
        .toBe(true);
    }
    const listed = await Promise.all(
      tb.replicas.map(async (c) => {
        const res = await fetch(`${c.url}/darkbloom.admin.v1.AdminService/ListProviders`, {
          method: "POST",
          headers: { authorization: `Bearer ${tb.adminKey}`, "content-type": "application/json" },
          body: "{}",
        });
        const { providers } = (await res.json()) as {
          providers: Array<{ providerId: string; machineId: string }>;
        };
        return providers.map((p) => [p.providerId, p.machineId]);
      }),
    );
    expect(listed[1]).toEqual(listed[0]);
    expect(listed[0]).toHaveLength(1);
  });

  it("B killed mid-stream: an error event and one [DONE] on A, charged for what arrived, then served again", async () => {
    const account = await tb.createAccount(CREDIT);
    const before = await tb.balance(account.id);
    const stream = openStream(tb, account.apiKey, greedyChat(long.prompt), { timeoutMs: 30_000 });
    await stream.firstContent;
    const holder = tb.replicas[B] as TestbedCoordinator;
    await holder.kill("SIGKILL");

    const r = await stream.done;
    const error = expectCleanStreamError(r);
    expect(error.type).toBe("provider_error");
    expect(r.content.length).toBeGreaterThan(0);
    expect(long.completion.text.startsWith(r.content)).toBe(true);
    expect(r.content.length).toBeLessThan(long.completion.text.length);

    // B comes back on its port, the daemon reconnects to it, and A forwards again.
    holder.start();
    await holder.waitHealthy();
    await servedThroughA();
    await expectPartialCharge(tb, account, before, r, long.prompt, probe.apiKey);
    await expectLedgerClean(tb);
  });

  it("A killed mid-stream: B cancels the provider's work, A restarts and serves, the reservation is refunded", async () => {
    const account = await tb.createAccount(CREDIT);
    const before = await tb.balance(account.id);
    const provider = tb.providers[0] as TestbedProvider;
    const stream = openStream(tb, account.apiKey, greedyChat(long.prompt), { timeoutMs: 30_000 });
    await stream.firstContent;
    // Frozen: the request cannot finish by itself.
    await provider.pause();
    const front = tb.replicas[A] as TestbedCoordinator;
    await front.kill("SIGKILL");
    const r = await stream.done;
    expect(r.doneCount).toBe(0);

    // B saw A's connection go and cancelled the provider's work (the provider is frozen: it could
    // not have finished by itself).
    const holder = tb.replicas[B] as TestbedCoordinator;
    await waitUntil(
      async () => (await readFile(holder.logFile, "utf8")).includes("the replica that sent it went away"),
      15_000,
      "B to cancel the request whose replica died",
      [holder],
    );
    front.start();
    await front.waitHealthy();
    await provider.resume();
    await servedThroughA();
    // The dead instance's reservation is refunded once it is presumed dead: the consumer pays nothing.
    await expectLedgerClean(tb);
    const record = await settledUsage(tb, account.id, r.requestId);
    expect(record).toMatchObject({ outcome: "recovered", chargedMicroUsd: 0n });
    expect(await tb.balance(account.id)).toBe(before);
  });
});
