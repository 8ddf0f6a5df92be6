import { pino } from "pino";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AccountStore } from "../accounts/account-store.js";
import { ApiError } from "../errors/index.js";
import { waitFor } from "../testing/test-coordinator.js";
import {
  createTestDatabase,
  startTestPostgres,
  type TestDatabase,
  type TestPostgres,
} from "../testing/test-database.js";
import { Billing, DEFAULT_BILLING_OPTIONS } from "./billing.js";
import { verifyLedger } from "./ledger-verify.js";

const log = pino({ level: "silent" });
let server: TestPostgres;
let db: TestDatabase;
let accounts: AccountStore;
let billing: Billing;

beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});
beforeEach(async () => {
  db = await createTestDatabase(server.url);
  accounts = new AccountStore(db.pool);
  billing = new Billing(db.pool, { ...DEFAULT_BILLING_OPTIONS, heartbeatMs: 60_000 }, log);
  await billing.start();
});
afterEach(async () => {
  await billing.stop();
  await db.drop();
});

async function balanceOf(account: string, bucket?: "credited" | "earned"): Promise<bigint> {
  const { rows } = await db.pool.query<{ b: string }>(
    `SELECT coalesce(sum(amount_micro_usd), 0)::text AS b FROM ledger_entries WHERE account = $1 ${bucket ? "AND bucket = $2" : ""}`,
    bucket ? [account, bucket] : [account],
  );
  return BigInt(rows[0]?.b ?? "0");
}

const settlement = (charge: bigint, outcome = "completed") => ({
  chargeMicroUsd: charge,
  providerAccount: "provider:m1",
  promptTokens: 10,
  completionTokens: 20,
  outcome,
});

describe("Billing", () => {
  it("holds the worst case, then charges actual usage, refunds the rest and splits the charge", async () => {
    const referrer = await accounts.createAccount({ name: "referrer" });
    const { account } = await accounts.createAccount({ name: "c", initialCreditMicroUsd: 10_000n });
    await db.pool.query("UPDATE accounts SET referrer_id = $1 WHERE id = $2", [
      referrer.account.id,
      account.id,
    ]);

    await billing.reserve("req_1", account.id, "m", 4_000n);
    expect(await billing.balance(account.id)).toBe(6_000n);
    expect(await balanceOf("platform:reservations")).toBe(4_000n);

    expect(await billing.settle("req_1", settlement(1_000n))).toBe("settled");
    expect(await billing.balance(account.id)).toBe(9_000n);
    expect(await balanceOf("provider:m1", "earned")).toBe(950n); // 95%
    // 20% of the 50 fee, paid as credit: the consumer paid with credit, which no referral makes withdrawable.
    expect(await balanceOf(referrer.account.id, "credited")).toBe(10n);
    expect(await balanceOf(referrer.account.id, "earned")).toBe(0n);
    expect(await balanceOf("platform:fees")).toBe(40n);
    expect(await balanceOf("platform:reservations")).toBe(0n);
    expect((await verifyLedger(db.pool)).ok).toBe(true);
  });

  it("settles once: a second settlement (double completion) changes nothing", async () => {
    const { account } = await accounts.createAccount({ name: "c", initialCreditMicroUsd: 1_000n });
    await billing.reserve("req_2", account.id, "m", 500n);
    expect(await billing.settle("req_2", settlement(300n))).toBe("settled");
    expect(await billing.settle("req_2", settlement(300n))).toBe("already");
    expect(await billing.settle("req_2", settlement(0n, "failed"))).toBe("already");
    expect(await billing.balance(account.id)).toBe(700n);
    expect(await billing.settle("req_unknown", settlement(1n))).toBe("unknown");
  });

  it("clamps a charge to the reservation", async () => {
    const { account } = await accounts.createAccount({ name: "c", initialCreditMicroUsd: 1_000n });
    await billing.reserve("req_3", account.id, "m", 200n);
    await billing.settle("req_3", settlement(999_999n));
    expect(await billing.balance(account.id)).toBe(800n);
  });

  it("answers 402 insufficient_quota with OpenAI's fields when the balance cannot cover the hold", async () => {
    const { account } = await accounts.createAccount({ name: "poor", initialCreditMicroUsd: 99n });
    const e = await billing.reserve("req_4", account.id, "m", 100n).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ApiError);
    expect((e as ApiError).status).toBe(402);
    expect((e as ApiError).toJSON().error).toEqual({
      type: "insufficient_funds",
      code: "insufficient_quota",
      param: null,
      message: expect.stringContaining("$0.000099"),
    });
    expect(await billing.balance(account.id)).toBe(99n);
  });

  it("spends credited money before earned money and refunds each to its bucket", async () => {
    const { account } = await accounts.createAccount({ name: "c", initialCreditMicroUsd: 100n });
    // Earn 950 by serving someone else's request.
    const other = await accounts.createAccount({ name: "o", initialCreditMicroUsd: 5_000n });
    await billing.reserve("req_5", other.account.id, "m", 1_000n);
    await billing.settle("req_5", { ...settlement(1_000n), providerAccount: account.id });
    expect(await balanceOf(account.id, "earned")).toBe(950n);
    await billing.reserve("req_6", account.id, "m", 300n);
    expect(await balanceOf(account.id, "credited")).toBe(0n);
    expect(await balanceOf(account.id, "earned")).toBe(750n);
    await billing.settle("req_6", settlement(0n, "failed"));
    expect(await balanceOf(account.id, "credited")).toBe(100n);
    expect(await balanceOf(account.id, "earned")).toBe(950n);
  });

  it("never drives a balance negative under concurrent budget exhaustion", async () => {
    const { account } = await accounts.createAccount({ name: "c", initialCreditMicroUsd: 1_000n });
    const results = await Promise.allSettled(
      Array.from({ length: 60 }, (_, i) => billing.reserve(`req_c${i}`, account.id, "m", 100n)),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(10);
    for (const r of results) if (r.status === "rejected") expect((r.reason as ApiError).status).toBe(402);
    expect(await billing.balance(account.id)).toBe(0n);
    await Promise.all(
      Array.from({ length: 60 }, (_, i) => billing.settle(`req_c${i}`, settlement(i % 2 === 0 ? 100n : 0n))),
    );
    const chargedRequests = results.filter((r, i) => r.status === "fulfilled" && i % 2 === 0).length;
    expect(await billing.balance(account.id)).toBe(1_000n - 100n * BigInt(chargedRequests));
    expect((await verifyLedger(db.pool)).ok).toBe(true);
  });

  it("refunds reservations a dead coordinator left open", async () => {
    const { account } = await accounts.createAccount({ name: "c", initialCreditMicroUsd: 1_000n });
    const crashed = new Billing(db.pool, { ...DEFAULT_BILLING_OPTIONS, heartbeatMs: 60_000 }, log);
    await crashed.start();
    await crashed.reserve("req_orphan", account.id, "m", 400n);
    // The crashed coordinator stops heartbeating; it is presumed dead once silent for ownerStaleMs.
    await db.pool.query(
      "UPDATE coordinator_instances SET last_seen = now() - interval '1 hour' WHERE id = $1",
      [crashed.instanceId],
    );
    await billing.reserve("req_live", account.id, "m", 100n);
    expect(await billing.recover()).toBe(1);
    expect(await billing.balance(account.id)).toBe(900n);
    expect(await billing.recover()).toBe(0);
    const { rows } = await db.pool.query("SELECT outcome FROM reservations WHERE request_id = 'req_orphan'");
    expect(rows[0]).toEqual({ outcome: "recovered" });
    await crashed.stop();
  });
});

describe("Billing while the database is unreachable", () => {
  it("keeps a settlement the database could not take and writes it once the database answers", async () => {
    const { account } = await accounts.createAccount({ name: "c", initialCreditMicroUsd: 1_000n });
    // The coordinator's pool, with an outage switch: every statement is refused while it is on.
    let down = false;
    const refused = () =>
      Promise.reject(
        Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" }),
      );
    const pool = new Proxy(db.pool, {
      get: (target, prop, receiver) =>
        prop === "query" && down ? refused : Reflect.get(target, prop, receiver),
    });
    const b = new Billing(pool, { ...DEFAULT_BILLING_OPTIONS, heartbeatMs: 20 }, log);
    await b.start();
    try {
      await b.reserve("req_later", account.id, "m", 400n);
      down = true;
      await expect(b.settle("req_later", settlement(300n))).rejects.toThrow("ECONNREFUSED");
      b.settleLater("req_later", settlement(300n));
      // Heartbeats fail while the database is away; the settlement waits.
      await new Promise((r) => setTimeout(r, 100));
      expect(b.deferredSettlements).toBe(1);
      down = false;
      await waitFor(() => b.deferredSettlements === 0, 5_000, "the deferred settlement to be written");
      expect(await billing.balance(account.id)).toBe(700n);
      const { rows } = await db.pool.query(
        "SELECT state, outcome, charged_micro_usd::text AS charged FROM reservations WHERE request_id = 'req_later'",
      );
      expect(rows[0]).toEqual({ state: "settled", outcome: "completed", charged: "300" });
      const ledger = await verifyLedger(db.pool);
      expect(ledger.ok).toBe(true);
      expect(ledger.openReservations).toBe(0);
    } finally {
      down = false;
      await b.stop();
    }
  });

  it("writes deferred settlements at shutdown when the database answers", async () => {
    const { account } = await accounts.createAccount({ name: "c", initialCreditMicroUsd: 1_000n });
    const b = new Billing(db.pool, { ...DEFAULT_BILLING_OPTIONS, heartbeatMs: 60_000 }, log);
    await b.start();
    await b.reserve("req_at_stop", account.id, "m", 400n);
    b.settleLater("req_at_stop", settlement(0n, "failed"));
    await b.stop();
    expect(b.deferredSettlements).toBe(0);
    expect(await billing.balance(account.id)).toBe(1_000n);
  });
});

describe("verifyLedger", () => {
  it("reports every kind of discrepancy it checks", async () => {
    const { account } = await accounts.createAccount({ name: "c", initialCreditMicroUsd: 1_000n });
    await billing.reserve("req_v", account.id, "m", 100n);
    expect(await verifyLedger(db.pool)).toMatchObject({ ok: true, openReservations: 1 });
    // A reservation left open past its TTL, and a balance that no longer matches its entries.
    await db.pool.query(
      "UPDATE reservations SET expires_at = now() - interval '1 second' WHERE request_id = 'req_v'",
    );
    await db.pool.query("UPDATE balances SET amount_micro_usd = amount_micro_usd + 7 WHERE account = $1", [
      account.id,
    ]);
    const report = await verifyLedger(db.pool);
    expect(report.ok).toBe(false);
    expect(report.discrepancies.map((d) => d.check).sort()).toEqual([
      "balance_mismatch",
      "stale_reservation",
    ]);
    expect(report.discrepancies.find((d) => d.check === "balance_mismatch")?.detail).toContain(account.id);
  });
});
