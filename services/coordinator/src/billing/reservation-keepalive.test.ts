import { readSse, ScriptedProvider } from "@darkbloom/testing";
import pg from "pg";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AccountStore } from "../accounts/account-store.js";
import { ledgerBalance } from "../testing/ledger-queries.js";
import { postJson, startTestCoordinator, type TestCoordinator } from "../testing/test-coordinator.js";
import {
  createTestDatabase,
  startTestPostgres,
  type TestDatabase,
  type TestPostgres,
} from "../testing/test-database.js";
import { Billing, type BillingOptions, DEFAULT_BILLING_OPTIONS } from "./billing.js";
import { verifyLedger } from "./ledger-verify.js";
import { completedCharge } from "./pricing.js";

// The attack of issue 10, item 8, through the public API: a stream that outlives the reservation's
// TTL. The TTL is 1 s here (5 min in production) and the billing heartbeat 50 ms, so the stream
// below (about 3 s) outlives it three times over without the test waiting minutes.

let server: TestPostgres;
let t: TestCoordinator;
let pool: pg.Pool;
let provider: ScriptedProvider;
const price = { inputMicroUsdPerMillion: 1_000_000_000n, outputMicroUsdPerMillion: 2_000_000_000n };
const TOKENS = 30;

beforeAll(async () => {
  server = await startTestPostgres();
  t = await startTestCoordinator(server.url, {
    reservationTtlSeconds: 1,
    instanceHeartbeatMs: 50,
    instanceStaleMs: 1_000,
  });
  pool = new pg.Pool({ connectionString: t.coordinator.databaseUrl });
  await t.coordinator.catalog.upsert({ id: "long", ...price });
  provider = new ScriptedProvider({
    baseUrl: t.url,
    models: [{ id: "long" }],
    machineId: "m-long",
    script: () => ({ tokens: Array.from({ length: TOKENS }, () => "x "), interTokenDelayMs: 100 }),
  });
  await provider.start();
});
afterAll(async () => {
  await provider?.stop();
  await pool?.end();
  await t?.close();
  await server?.stop();
});

const balance = (account: string) => ledgerBalance(pool, account);

describe("a stream that outlives the reservation TTL", () => {
  it("keeps its reservation while it streams and is charged when it ends", async () => {
    const created = await t.coordinator.accounts.createAccount({
      name: "long streamer",
      initialCreditMicroUsd: 10_000_000n,
    });
    const started = Date.now();
    const res = await postJson(t.url, "/v1/chat/completions", created.secret, {
      model: "long",
      messages: [{ role: "user", content: "Take your time." }],
      max_tokens: 100,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(res.status).toBe(200);
    const requestId = res.headers.get("x-request-id") ?? "";
    const { events } = await readSse(res);
    expect(Date.now() - started).toBeGreaterThan(2_000); // two TTLs and more
    const usage = events
      .filter((e) => e.data !== "[DONE]")
      .map((e) => JSON.parse(e.data).usage)
      .find((u) => u);
    expect(usage.completion_tokens).toBe(TOKENS);

    await expect
      .poll(
        async () =>
          (await pool.query("SELECT outcome FROM reservations WHERE request_id = $1", [requestId])).rows[0]
            ?.outcome,
      )
      .toBe("completed");
    const { rows } = await pool.query(
      "SELECT charged_micro_usd::text AS charged FROM reservations WHERE request_id = $1",
      [requestId],
    );
    const charge = completedCharge(price, usage.prompt_tokens, usage.completion_tokens);
    expect(rows[0]).toEqual({ charged: charge.toString() });
    expect(await balance(created.account.id)).toBe(10_000_000n - charge);
    expect(await balance("provider:m-long")).toBe((charge * 9_500n) / 10_000n);
    expect((await verifyLedger(pool)).discrepancies).toEqual([]);
  });
});

// Coordinators on one database, with a 1 s lease renewed (and swept) every 50 ms. (A coordinator is
// presumed dead after 2 s of silence, so a slow test machine does not make a live one look dead.)
describe("reservation leases", () => {
  const log = pino({ level: "silent" });
  const fast = { ...DEFAULT_BILLING_OPTIONS, reservationTtlSeconds: 1, heartbeatMs: 50, ownerStaleMs: 2_000 };
  let db: TestDatabase;
  let accounts: AccountStore;
  const started: Billing[] = [];

  beforeEach(async () => {
    db = await createTestDatabase(server.url);
    accounts = new AccountStore(db.pool);
  });
  afterEach(async () => {
    for (const b of started.splice(0)) await b.stop();
    await db.drop();
  });

  async function coordinator(options: Partial<BillingOptions> = {}): Promise<Billing> {
    const b = new Billing(db.pool, { ...fast, ...options }, log);
    started.push(b);
    await b.start();
    return b;
  }

  async function row(requestId: string) {
    const { rows } = await db.pool.query(
      `SELECT state, outcome, charged_micro_usd::text AS charged, recovered_at IS NOT NULL AS recovered
         FROM reservations WHERE request_id = $1`,
      [requestId],
    );
    return rows[0] as { state: string; outcome: string | null; charged: string | null; recovered: boolean };
  }

  const settlement = (charge: bigint) => ({
    chargeMicroUsd: charge,
    providerAccount: "provider:m-lease",
    promptTokens: 10,
    completionTokens: 20,
    outcome: "completed",
  });

  async function expectLedgerClean(): Promise<void> {
    const report = await verifyLedger(db.pool);
    expect(report.discrepancies).toEqual([]);
    expect(report.openReservations).toBe(0);
  }

  it("are renewed by their live owner: no coordinator refunds a request in flight past its TTL", async () => {
    const { account } = await accounts.createAccount({ name: "c", initialCreditMicroUsd: 1_000n });
    const owner = await coordinator();
    await coordinator(); // another live coordinator, sweeping too
    await owner.reserve("req_kept", account.id, "m", 400n);
    await new Promise((r) => setTimeout(r, 2_500));
    expect(await row("req_kept")).toMatchObject({ state: "open", recovered: false });
    expect(owner.reservationsInFlight).toBe(1);
    expect(await owner.settle("req_kept", settlement(300n))).toBe("settled");
    expect(owner.reservationsInFlight).toBe(0);
    expect(await owner.balance(account.id)).toBe(700n);
    await expectLedgerClean();
  });

  it("of a dead owner are refunded by another coordinator, renewed or not", async () => {
    const { account } = await accounts.createAccount({ name: "c", initialCreditMicroUsd: 1_000n });
    const survivor = await coordinator({ ownerStaleMs: 500 });
    const doomed = new Billing(db.pool, { ...fast, reservationTtlSeconds: 3_600 }, log);
    await doomed.start();
    await doomed.reserve("req_orphaned", account.id, "m", 400n);
    await doomed.stop(); // stops heartbeating, as if killed; its lease has an hour to run
    await expect.poll(async () => (await row("req_orphaned")).outcome, { timeout: 5_000 }).toBe("recovered");
    expect(await survivor.balance(account.id)).toBe(1_000n);
    await expectLedgerClean();
  });

  it("end at the hard bound even while their owner lives, and a later settlement still charges", async () => {
    const { account } = await accounts.createAccount({ name: "c", initialCreditMicroUsd: 1_000n });
    const owner = await coordinator({ reservationMaxSeconds: 2 });
    await owner.reserve("req_leaked", account.id, "m", 400n);
    await new Promise((r) => setTimeout(r, 1_500));
    expect((await row("req_leaked")).state).toBe("open"); // past its 1 s TTL: renewed
    await expect.poll(async () => (await row("req_leaked")).outcome, { timeout: 5_000 }).toBe("recovered");
    expect(owner.reservationsInFlight).toBe(0);
    expect(await owner.balance(account.id)).toBe(1_000n);

    // The request was still running after all: its settlement charges what it delivered, once.
    expect(await owner.settle("req_leaked", settlement(300n))).toBe("settled");
    expect(await row("req_leaked")).toEqual({
      state: "settled",
      outcome: "completed",
      charged: "300",
      recovered: true,
    });
    expect(await owner.balance(account.id)).toBe(700n);
    expect(await owner.settle("req_leaked", settlement(300n))).toBe("already");
    expect(await owner.balance(account.id)).toBe(700n);
    await expectLedgerClean();
  });

  it("charge a late settlement only as far as the balance covers it", async () => {
    const { account } = await accounts.createAccount({ name: "c", initialCreditMicroUsd: 1_000n });
    const owner = await coordinator();
    await owner.reserve("req_presumed_dead", account.id, "m", 600n);
    // Presumed dead (a long database outage, say), its reservation refunded by another coordinator ...
    const other = await coordinator();
    await db.pool.query(
      "UPDATE reservations SET expires_at = now() - interval '1 second' WHERE request_id = $1",
      ["req_presumed_dead"],
    );
    expect(await other.recover()).toBe(1);
    // ... and the consumer spends the refunded money meanwhile.
    await other.reserve("req_meanwhile", account.id, "m", 800n);
    expect(await other.settle("req_meanwhile", settlement(800n))).toBe("settled");

    expect(await owner.settle("req_presumed_dead", settlement(500n))).toBe("settled");
    expect(await row("req_presumed_dead")).toMatchObject({ outcome: "completed", charged: "200" });
    expect(await owner.balance(account.id)).toBe(0n);
    expect(await other.settle("req_presumed_dead", settlement(500n))).toBe("already");
    await expectLedgerClean();
  });
});
