import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import { ScriptedProvider } from "@darkbloom/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ledgerBalance, settledReservation } from "../testing/ledger-queries.js";
import {
  postJson,
  readJson,
  startTestCoordinator,
  TEST_ADMIN_KEY,
  type TestCoordinator,
  waitFor,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { completedCharge } from "./pricing.js";

let server: TestPostgres;
let t: TestCoordinator;
let pool: pg.Pool;
const price = { inputMicroUsdPerMillion: 1_000_000n, outputMicroUsdPerMillion: 2_000_000n }; // 1 and 2 µUSD a token

beforeAll(async () => {
  server = await startTestPostgres();
  t = await startTestCoordinator(server.url);
  await t.coordinator.catalog.upsert({ id: "paid", ...price });
  pool = new pg.Pool({ connectionString: t.coordinator.databaseUrl });
});
afterAll(async () => {
  await pool?.end();
  await t?.close();
  await server?.stop();
});

const balance = (account: string) => ledgerBalance(pool, account);
const settled = (requestId: string) => settledReservation(pool, requestId);

async function verify() {
  const admin = createClient(AdminService, createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" }));
  return admin.verifyLedger({}, { headers: { authorization: `Bearer ${TEST_ADMIN_KEY}` } });
}

async function funded(credit: bigint): Promise<{ id: string; key: string }> {
  const created = await t.coordinator.accounts.createAccount({
    name: "payer",
    initialCreditMicroUsd: credit,
  });
  return { id: created.account.id, key: created.secret };
}

const chat = (extra: Record<string, unknown> = {}) => ({
  model: "paid",
  messages: [{ role: "user", content: "What is the price of tea?" }],
  ...extra,
});

describe("billing through the API", () => {
  it("charges a completed request its actual usage and pays the provider 95%", async () => {
    const p = new ScriptedProvider({ baseUrl: t.url, models: [{ id: "paid" }], machineId: "m-complete" });
    await p.start();
    try {
      const payer = await funded(1_000_000n);
      const res = await postJson(t.url, "/v1/chat/completions", payer.key, chat({ max_tokens: 100 }));
      const body = await readJson(res);
      expect(res.status).toBe(200);
      const requestId = res.headers.get("x-request-id") ?? "";
      await waitFor(() => true);
      const r = await settled(requestId);
      const expected = completedCharge(price, body.usage.prompt_tokens, body.usage.completion_tokens);
      expect(BigInt(r.charged ?? "0")).toBe(expected);
      expect(BigInt(r.held)).toBeGreaterThanOrEqual(expected);
      expect(await balance(payer.id)).toBe(1_000_000n - expected);
      expect(await balance("provider:m-complete")).toBe((expected * 9_500n) / 10_000n);
      expect(JSON.parse(res.headers.get("x-timing") ?? "{}").reserve).toBeGreaterThan(0);
    } finally {
      await p.stop();
    }
  });

  it("refuses with 402 insufficient_quota before routing when the balance cannot cover the worst case", async () => {
    const p = new ScriptedProvider({ baseUrl: t.url, models: [{ id: "paid" }] });
    await p.start();
    try {
      const payer = await funded(50n);
      const res = await postJson(t.url, "/v1/chat/completions", payer.key, chat({ max_tokens: 1000 }));
      expect(res.status).toBe(402);
      expect(await readJson(res)).toEqual({
        error: {
          type: "insufficient_funds",
          code: "insufficient_quota",
          param: null,
          message: expect.stringContaining("$0.000050"),
        },
      });
      expect(p.received).toHaveLength(0);
      expect(await balance(payer.id)).toBe(50n);
    } finally {
      await p.stop();
    }
  });

  it("refunds everything when no provider produces a token, and charges only delivered tokens on a cancel", async () => {
    const failing = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "paid" }],
      script: () => ({ tokens: [], fail: { when: "before_first_token" } }),
    });
    await failing.start();
    const payer = await funded(1_000_000n);
    try {
      const res = await postJson(t.url, "/v1/chat/completions", payer.key, chat());
      expect(res.status).toBe(502);
      const requestId = res.headers.get("x-request-id") ?? "";
      expect((await settled(requestId)).charged).toBe("0");
      expect(await balance(payer.id)).toBe(1_000_000n);
    } finally {
      await failing.stop();
    }

    const slow = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "paid" }],
      script: () => ({ tokens: Array.from({ length: 100 }, () => "x"), interTokenDelayMs: 20 }),
    });
    await slow.start();
    try {
      const ac = new AbortController();
      const res = await postJson(t.url, "/v1/chat/completions", payer.key, chat({ stream: true }), {
        signal: ac.signal,
      });
      const requestId = res.headers.get("x-request-id") ?? "";
      const reader = res.body!.getReader();
      await reader.read();
      ac.abort();
      const r = await settled(requestId);
      expect(r.outcome).toBe("cancelled");
      expect(r.completion_tokens).toBeGreaterThan(0);
      expect(r.completion_tokens).toBeLessThan(100);
      expect(BigInt(r.charged ?? "0")).toBeLessThan(BigInt(r.held));
      expect(await balance(payer.id)).toBe(1_000_000n - BigInt(r.charged ?? "0"));
    } finally {
      await slow.stop();
    }
    expect((await verify()).ok).toBe(true);
  });
});
