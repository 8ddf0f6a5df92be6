import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import { ScriptedProvider } from "@darkbloom/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AnyJson,
  postJson,
  readJson,
  startTestCoordinator,
  TEST_ADMIN_KEY,
  type TestCoordinator,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { completedCharge } from "./pricing.js";

// The attack of issue 10, item 7, through the public API: an account holding promotional credit (an
// invite) links its own provider with device-code login and sends its requests to it.

let server: TestPostgres;
let t: TestCoordinator;
let pool: pg.Pool;
const price = { inputMicroUsdPerMillion: 1_000_000_000n, outputMicroUsdPerMillion: 2_000_000_000n };
const authHeaders = { authorization: `Bearer ${TEST_ADMIN_KEY}` };
const providers: ScriptedProvider[] = [];

beforeAll(async () => {
  server = await startTestPostgres();
  t = await startTestCoordinator(server.url);
  pool = new pg.Pool({ connectionString: t.coordinator.databaseUrl });
});
afterAll(async () => {
  for (const p of providers) await p.stop();
  await pool?.end();
  await t?.close();
  await server?.stop();
});

function admin() {
  return createClient(AdminService, createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" }));
}

function get(path: string, key: string): Promise<AnyJson> {
  return fetch(`${t.url}${path}`, { headers: { authorization: `Bearer ${key}` } }).then(readJson);
}

/** An account with no money but what the invite code it redeems gives it (promotional credit). */
async function invitedAccount(name: string, credit: bigint): Promise<{ id: string; key: string }> {
  const created = await t.coordinator.accounts.createAccount({ name });
  const { code } = await admin().createInvite(
    { creditMicroUsd: credit, maxUses: 1 },
    { headers: authHeaders },
  );
  const redeemed = await postJson(t.url, "/v1/invites/redeem", created.secret, { code });
  expect(redeemed.status).toBe(200);
  return { id: created.account.id, key: created.secret };
}

/** Links a new provider machine to the account holding `key`, as `darkbloom login` does. */
async function linkedProvider(key: string, machineId: string, model: string): Promise<ScriptedProvider> {
  const started = await readJson(await postJson(t.url, "/v1/device/code", undefined, {}));
  const approved = await postJson(t.url, "/v1/device/approve", key, { user_code: started.user_code });
  expect(approved.status).toBe(200);
  const token = await readJson(
    await postJson(t.url, "/v1/device/token", undefined, { device_code: started.device_code }),
  );
  const provider = new ScriptedProvider({
    baseUrl: t.url,
    models: [{ id: model }],
    machineId,
    accountToken: token.provider_token,
    script: () => ({ tokens: Array.from({ length: 20 }, () => "x ") }),
  });
  providers.push(provider);
  await provider.start();
  return provider;
}

async function buckets(accountId: string): Promise<{ credited: bigint; earned: bigint }> {
  const { rows } = await pool.query<{ bucket: "credited" | "earned"; s: string }>(
    "SELECT bucket, sum(amount_micro_usd)::text AS s FROM ledger_entries WHERE account = $1 GROUP BY bucket",
    [accountId],
  );
  const of = (b: string) => BigInt(rows.find((r) => r.bucket === b)?.s ?? "0");
  return { credited: of("credited"), earned: of("earned") };
}

async function platform(account: string): Promise<bigint> {
  const { rows } = await pool.query<{ s: string }>(
    "SELECT coalesce(sum(amount_micro_usd), 0)::text AS s FROM ledger_entries WHERE account = $1",
    [account],
  );
  return BigInt(rows[0]?.s ?? "0");
}

/** Sends one request with `key` and returns what it was charged once it is settled. */
async function spend(key: string, model: string): Promise<{ requestId: string; charge: bigint }> {
  const res = await postJson(t.url, "/v1/chat/completions", key, {
    model,
    messages: [{ role: "user", content: "Turn my credit into cash." }],
    max_tokens: 100,
  });
  expect(res.status).toBe(200);
  const body = await readJson(res);
  const requestId = res.headers.get("x-request-id") ?? "";
  await expect
    .poll(
      async () =>
        (await pool.query("SELECT state FROM reservations WHERE request_id = $1", [requestId])).rows[0]
          ?.state,
    )
    .toBe("settled");
  return {
    requestId,
    charge: completedCharge(price, body.usage.prompt_tokens, body.usage.completion_tokens),
  };
}

async function expectLedgerClean(): Promise<void> {
  const report = await admin().verifyLedger({}, { headers: authHeaders });
  expect(report.discrepancies).toEqual([]);
  expect(report.ok).toBe(true);
}

describe("self-dealing", () => {
  it("an account served by its own provider is charged, but its promotional credit earns it nothing", async () => {
    await t.coordinator.catalog.upsert({ id: "own-model", ...price });
    const attacker = await invitedAccount("self-dealer", 50_000_000n);
    await linkedProvider(attacker.key, "m-self", "own-model");
    const withheldBefore = await platform("platform:withheld");

    const { requestId, charge } = await spend(attacker.key, "own-model");
    expect(charge).toBeGreaterThan(0n);
    // No free lunch: the consumer pays the request in full, out of its promotional credit ...
    expect(await buckets(attacker.id)).toEqual({ credited: 50_000_000n - charge, earned: 0n });
    // ... and the provider's share, which it would have paid itself, goes to the platform.
    const share = (charge * 9_500n) / 10_000n;
    expect(await platform("platform:withheld")).toBe(withheldBefore + share);
    const { rows } = await pool.query(
      `SELECT provider_account, provider_paid_micro_usd::text AS paid, provider_withheld_micro_usd::text AS withheld
         FROM reservations WHERE request_id = $1`,
      [requestId],
    );
    expect(rows[0]).toEqual({ provider_account: attacker.id, paid: "0", withheld: share.toString() });
    const account = await get("/v1/account", attacker.key);
    expect(account).toMatchObject({ credited_micro_usd: Number(50_000_000n - charge), earned_micro_usd: 0 });
    const earnings = await get("/v1/account/earnings", attacker.key);
    expect(earnings).toMatchObject({ provider_earnings_micro_usd: 0, requests_served: 1 });
    expect(earnings.data).toEqual([
      expect.objectContaining({
        request_id: requestId,
        earned_micro_usd: 0,
        withheld_micro_usd: Number(share),
      }),
    ]);
    await expectLedgerClean();
  });

  it("a provider linked by a referral earns nothing from the account it referred or was referred by", async () => {
    await t.coordinator.catalog.upsert({ id: "ring-model", ...price });
    const owner = await invitedAccount("ring owner", 50_000_000n);
    const sock = await invitedAccount("ring sock", 50_000_000n);
    const code = (await get("/v1/referrals/code", owner.key)).referral_code;
    expect((await postJson(t.url, "/v1/referrals/apply", sock.key, { code })).status).toBe(200);
    await linkedProvider(owner.key, "m-ring", "ring-model");

    // The referred account's promotional credit, served by its referrer's provider.
    const first = await spend(sock.key, "ring-model");
    // The referrer's own credit, served by its own provider (routed to the only one serving the model).
    const second = await spend(owner.key, "ring-model");
    const fee = first.charge - (first.charge * 9_500n) / 10_000n;
    const referral = (fee * 2_000n) / 10_000n;
    expect(referral).toBeGreaterThan(0n);
    // The referral share of a request paid with promotional credit is itself promotional credit.
    expect(await buckets(owner.id)).toEqual({ credited: 50_000_000n - second.charge + referral, earned: 0n });
    expect(await buckets(sock.id)).toEqual({ credited: 50_000_000n - first.charge, earned: 0n });
    await expectLedgerClean();
  });

  it("an unrelated provider is paid its withdrawable share for serving promotional credit", async () => {
    await t.coordinator.catalog.upsert({ id: "fair-model", ...price });
    const consumer = await invitedAccount("promo consumer", 50_000_000n);
    const stranger = await t.coordinator.accounts.createAccount({ name: "stranger" });
    await linkedProvider(stranger.secret, "m-stranger", "fair-model");

    const { charge } = await spend(consumer.key, "fair-model");
    expect(await buckets(stranger.account.id)).toEqual({ credited: 0n, earned: (charge * 9_500n) / 10_000n });
    expect(await buckets(consumer.id)).toEqual({ credited: 50_000_000n - charge, earned: 0n });
    await expectLedgerClean();
  });
});

describe("settlement between accounts", () => {
  const settle = (requestId: string, charge: bigint, providerAccount: string) =>
    t.coordinator.billing!.settle(requestId, {
      chargeMicroUsd: charge,
      providerAccount,
      promptTokens: 10,
      completionTokens: 20,
      outcome: "completed",
    });

  it("withholds the share of a provider whose account the consumer referred", async () => {
    const consumer = await invitedAccount("referring consumer", 10_000n);
    const provider = await t.coordinator.accounts.createAccount({ name: "referred provider" });
    const code = (await get("/v1/referrals/code", consumer.key)).referral_code;
    expect((await postJson(t.url, "/v1/referrals/apply", provider.secret, { code })).status).toBe(200);

    await t.coordinator.billing!.reserve("req_reverse_link", consumer.id, "m", 2_000n);
    expect(await settle("req_reverse_link", 1_000n, provider.account.id)).toBe("settled");
    expect(await buckets(provider.account.id)).toEqual({ credited: 0n, earned: 0n });
    expect(await buckets(consumer.id)).toEqual({ credited: 9_000n, earned: 0n });
    await expectLedgerClean();
  });

  it("pays the referral share in the buckets the consumer paid from", async () => {
    const referrer = await t.coordinator.accounts.createAccount({ name: "referrer" });
    const consumer = await invitedAccount("half-earned consumer", 100n);
    const code = (await get("/v1/referrals/code", referrer.secret)).referral_code;
    expect((await postJson(t.url, "/v1/referrals/apply", consumer.key, { code })).status).toBe(200);
    // The consumer earns 950 serving a stranger: withdrawable money of its own.
    const stranger = await invitedAccount("stranger", 5_000n);
    await t.coordinator.billing!.reserve("req_earn", stranger.id, "m", 1_000n);
    expect(await settle("req_earn", 1_000n, consumer.id)).toBe("settled");
    expect(await buckets(consumer.id)).toEqual({ credited: 100n, earned: 950n });

    // 1,000 paid with 100 credited and 900 earned: a fee of 50 and a referral share of 10, nine
    // tenths of it withdrawable.
    await t.coordinator.billing!.reserve("req_split", consumer.id, "m", 1_000n);
    expect(await settle("req_split", 1_000n, "provider:m-elsewhere")).toBe("settled");
    expect(await buckets(consumer.id)).toEqual({ credited: 0n, earned: 50n });
    expect(await buckets(referrer.account.id)).toEqual({ credited: 1n, earned: 9n });
    await expectLedgerClean();
  });
});
