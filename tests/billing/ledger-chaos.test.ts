// A randomized billing run: hundreds of concurrent requests across several accounts and providers,
// with provider failures before and after the first token, invisible retries, streaming cuts at the
// reservation, consumer cancels, and a coordinator restart in the middle. Afterwards the ledger must
// verify and every balance must equal what this test computes on its own from the cases it sent.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createLogger, type RunningCoordinator, startCoordinator } from "@darkbloom/coordinator";
import {
  createTestDatabase,
  startTestPostgres,
  type TestDatabase,
  type TestPostgres,
  waitFor,
} from "@darkbloom/coordinator/testing";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import { type ReceivedRequest, type Script, ScriptedProvider } from "@darkbloom/testing";
import pg from "pg";
import { afterAll, beforeAll, expect, it } from "vitest";

const ADMIN_KEY = "chaos-admin-key";
// 10 µUSD per prompt token and 20 per completion token, so charges are well above the minimum.
const PRICE_IN = 10n;
const PRICE_OUT = 20n;
const MIN_CHARGE = 100n;
const PROMPT_TOKENS = 20; // what the scripted providers report
const PROVIDER_BPS = 9_500n;

type Case = "complete" | "retry" | "fail" | "cut" | "error_after" | "cancel" | "json_error_after" | "stall";

interface Sent {
  requestId: string;
  status?: number;
  account: number;
  kind: Case;
  k: number;
  expectedCharge: bigint;
}

// The coordinator's documented prompt estimate: ceil(chars / 4) per message + 4 per message + 3.
const estimate = (content: string) => Math.ceil(content.length / 4) + 4 + 3;
const cost = (prompt: number, completion: number) =>
  (BigInt(prompt) * PRICE_IN * 1_000_000n + BigInt(completion) * PRICE_OUT * 1_000_000n + 999_999n) /
  1_000_000n;
const completedCharge = (prompt: number, completion: number) => {
  const c = cost(prompt, completion);
  return c > MIN_CHARGE ? c : MIN_CHARGE;
};

let server: TestPostgres;
let db: TestDatabase;
let dataDir: string;
let coordinator: RunningCoordinator;
let providers: ScriptedProvider[] = [];
let pool: pg.Pool;
const seenRetry = new Set<string>();

function script(r: ReceivedRequest): Script {
  const content = (r.body as { messages: Array<{ content: string }> }).messages[0]?.content ?? "";
  const [, kind, kText] = content.split(":");
  const k = Number(kText);
  const tokens = Array.from({ length: 8 }, (_, i) => `w${i} `);
  const base = { promptTokens: PROMPT_TOKENS, interTokenDelayMs: 1 };
  switch (kind as Case) {
    case "complete":
      return { ...base, tokens };
    case "retry":
      if (!seenRetry.has(r.requestId)) {
        seenRetry.add(r.requestId);
        return { ...base, tokens, fail: { when: "before_first_token" } };
      }
      return { ...base, tokens };
    case "fail":
      return { ...base, tokens, fail: { when: "before_first_token" } };
    case "cut":
      return { ...base, tokens: Array.from({ length: 40 }, (_, i) => `c${i} `), ignoreMaxTokens: true };
    case "error_after":
    case "json_error_after":
      return {
        ...base,
        tokens,
        fail: {
          when: "after_tokens",
          afterTokens: k,
          error: { httpStatus: 500, code: "engine_failed", message: "x", retryable: false },
        },
      };
    case "cancel":
      return { ...base, tokens, fail: { when: "after_tokens", afterTokens: k, error: "stall" } };
    case "stall":
      return { ...base, tokens, fail: { when: "before_first_token", error: "stall" } };
  }
}

async function start(port: number): Promise<RunningCoordinator> {
  return startCoordinator(
    {
      dataDir,
      adminKey: ADMIN_KEY,
      databaseUrl: db.url,
      port,
      heartbeatIntervalMs: 500,
      queueTimeoutMs: 20_000,
      rateLimitPerSecond: 0,
      instanceHeartbeatMs: 100,
      instanceStaleMs: 400,
      minTrustLevel: "none", // scripted providers carry no attestation
    },
    { logger: createLogger("silent") },
  );
}

beforeAll(async () => {
  server = await startTestPostgres();
  db = await createTestDatabase(server.url);
  dataDir = await mkdtemp(join(tmpdir(), "darkbloom-chaos-"));
  coordinator = await start(0);
  for (const id of ["paid", "overrun"]) {
    await coordinator.catalog.upsert({
      id,
      inputMicroUsdPerMillion: PRICE_IN * 1_000_000n,
      outputMicroUsdPerMillion: PRICE_OUT * 1_000_000n,
    });
  }
  // chaos-0..3 serve "paid"; chaos-4 serves "overrun" one request at a time, and is cut (evicted, then
  // reconnects) on each of them.
  providers = await Promise.all(
    Array.from({ length: 5 }, async (_, i) => {
      const p = new ScriptedProvider({
        baseUrl: coordinator.url,
        models: [{ id: i < 4 ? "paid" : "overrun", contextLength: 8192 }],
        machineId: `chaos-${i}`,
        maxBatch: i < 4 ? 16 : 1,
        reconnect: true,
        reconnectBackoff: { initialMs: 50, maxMs: 200 },
        script,
      });
      await p.start();
      return p;
    }),
  );
  pool = new pg.Pool({ connectionString: db.url });
});

afterAll(async () => {
  await Promise.all(providers.map((p) => p.stop().catch(() => undefined)));
  await coordinator?.close({ drainMs: 0 });
  await pool?.end();
  await db?.drop();
  await server?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Sends one case and returns what it must cost, computed from the case alone. */
async function send(
  url: string,
  key: string,
  account: number,
  kind: Case,
  k: number,
  i: number,
): Promise<Sent> {
  const content = `case:${kind}:${k}:${i}`;
  const prompt = estimate(content);
  const stream = kind === "cut" || kind === "error_after" || kind === "cancel" || kind === "stall";
  const maxTokens = kind === "cut" ? 5 : 16;
  const body = JSON.stringify({
    // Overruns go to a provider of their own: cutting it ends whatever else it serves at that moment.
    model: kind === "cut" ? "overrun" : "paid",
    messages: [{ role: "user", content }],
    stream,
    max_tokens: maxTokens,
  });
  const ac = new AbortController();
  const res = await fetch(new URL("/v1/chat/completions", url), {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body,
    signal: ac.signal,
  }).catch(() => undefined);
  let expectedCharge = 0n;
  switch (kind) {
    case "complete":
    case "retry":
      expect(res?.status).toBe(200);
      expectedCharge = completedCharge(PROMPT_TOKENS, 8);
      break;
    case "cut":
      // The provider runs past max_tokens: the chunk past it is not delivered, the provider is cut
      // (evicted; it reconnects), and the stream pays for the tokens delivered before it.
      expectedCharge = cost(prompt, maxTokens);
      break;
    case "error_after":
      expectedCharge = cost(prompt, k);
      break;
    case "cancel": {
      // Read until k tokens arrived (the provider then stalls), and hang up.
      const reader = res?.body?.getReader();
      let text = "";
      while (reader && (text.match(/"content":"w\d+ "/g)?.length ?? 0) < k) {
        const r = await reader.read();
        if (r.done) break;
        text += new TextDecoder().decode(r.value);
      }
      ac.abort();
      expectedCharge = cost(prompt, k);
      return { requestId: res?.headers.get("x-request-id") ?? "", account, kind, k, expectedCharge };
    }
    case "fail":
    case "json_error_after":
    case "stall":
      expectedCharge = 0n;
      break;
  }
  await res?.arrayBuffer().catch(() => undefined);
  return {
    requestId: res?.headers.get("x-request-id") ?? "",
    status: res?.status,
    account,
    kind,
    k,
    expectedCharge,
  };
}

it("keeps every micro-dollar through failures, retries, cuts, cancels and a coordinator restart", async () => {
  const accounts = await Promise.all(
    Array.from({ length: 5 }, (_, i) =>
      coordinator.accounts.createAccount({ name: `u${i}`, initialCreditMicroUsd: 10_000_000n }),
    ),
  );
  const random = mulberry32(20261122);
  const kinds: Case[] = [
    "complete",
    "complete",
    "retry",
    "fail",
    "cut",
    "error_after",
    "cancel",
    "json_error_after",
  ];
  const plan = (n: number, offset: number) =>
    Array.from({ length: n }, (_, i) => ({
      account: Math.floor(random() * accounts.length),
      kind: kinds[Math.floor(random() * kinds.length)] as Case,
      k: 1 + Math.floor(random() * 5),
      i: offset + i,
    }));

  // Phase 1: 240 concurrent requests.
  const sent: Sent[] = await Promise.all(
    plan(240, 0).map((p) => send(coordinator.url, accounts[p.account]!.secret, p.account, p.kind, p.k, p.i)),
  );

  // Phase 2: requests stalled before their first token when the coordinator goes away at once.
  const port = Number(new URL(coordinator.url).port);
  const stalled = Array.from({ length: 12 }, (_, i) =>
    send(coordinator.url, accounts[i % accounts.length]!.secret, i % accounts.length, "stall", 0, 1_000 + i),
  );
  await waitFor(
    () => providers.reduce((n, p) => n + p.inFlight, 0) >= 12,
    10_000,
    "stalled requests to reach providers",
  );
  await coordinator.close({ drainMs: 0 });
  sent.push(...(await Promise.all(stalled)));
  coordinator = await start(port);
  await waitFor(() => coordinator.registry.size === 5, 10_000, "providers to reconnect");

  // Phase 3: more traffic on the new coordinator.
  sent.push(
    ...(await Promise.all(
      plan(80, 2_000).map((p) =>
        send(coordinator.url, accounts[p.account]!.secret, p.account, p.kind, p.k, p.i),
      ),
    )),
  );

  // Reservations the first coordinator left open are refunded once it is presumed dead.
  await expect
    .poll(
      async () =>
        (await pool.query("SELECT count(*)::int AS n FROM reservations WHERE state = 'open'")).rows[0].n,
      {
        timeout: 10_000,
      },
    )
    .toBe(0);

  const admin = createClient(
    AdminService,
    createConnectTransport({ baseUrl: coordinator.url, httpVersion: "1.1" }),
  );
  const report = await admin.verifyLedger({}, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  expect(report.discrepancies).toEqual([]);
  expect(report.ok).toBe(true);

  const balance = async (account: string) =>
    BigInt(
      (
        await pool.query(
          "SELECT coalesce(sum(amount_micro_usd), 0)::text AS b FROM ledger_entries WHERE account = $1",
          [account],
        )
      ).rows[0].b,
    );
  const charged = new Map(
    (
      await pool.query(
        "SELECT request_id, charged_micro_usd::text AS c, outcome, completion_tokens FROM reservations",
      )
    ).rows.map((r) => [r.request_id as string, r]),
  );
  const mismatches = sent
    .filter((s) => s.requestId && BigInt(charged.get(s.requestId)?.c ?? "0") !== s.expectedCharge)
    .map((s) => ({ ...s, expectedCharge: String(s.expectedCharge), actual: charged.get(s.requestId) }));
  expect(mismatches).toEqual([]);
  for (const [i, a] of accounts.entries()) {
    const spent = sent.filter((s) => s.account === i).reduce((sum, s) => sum + s.expectedCharge, 0n);
    expect(await balance(a.account.id), `account u${i}`).toBe(10_000_000n - spent);
  }
  let providerTotal = 0n;
  for (let i = 0; i < 5; i++) providerTotal += await balance(`provider:chaos-${i}`);
  const expectedProvider = sent.reduce((sum, s) => sum + (s.expectedCharge * PROVIDER_BPS) / 10_000n, 0n);
  expect(providerTotal).toBe(expectedProvider);
  const totalCharged = sent.reduce((sum, s) => sum + s.expectedCharge, 0n);
  expect(await balance("platform:fees")).toBe(totalCharged - expectedProvider);
  expect(sent.filter((s) => s.kind === "cut").length).toBeGreaterThan(10);
  expect(sent.filter((s) => s.kind === "cancel").length).toBeGreaterThan(10);
}, 120_000);
