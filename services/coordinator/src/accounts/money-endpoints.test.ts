import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import { readSse, ScriptedProvider } from "@darkbloom/testing";
import pg from "pg";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { completedCharge } from "../billing/pricing.js";
import { startCoordinator } from "../coordinator.js";
import {
  type AnyJson,
  postJson,
  readJson,
  startTestCoordinator,
  TEST_ADMIN_KEY,
  type TestCoordinator,
} from "../testing/test-coordinator.js";
import { createTestDatabase, startTestPostgres, type TestPostgres } from "../testing/test-database.js";

let server: TestPostgres;
let t: TestCoordinator;
let pool: pg.Pool;
let provider: ScriptedProvider;
const price = { inputMicroUsdPerMillion: 1_000_000_000n, outputMicroUsdPerMillion: 2_000_000_000n };
const authHeaders = { authorization: `Bearer ${TEST_ADMIN_KEY}` };

beforeAll(async () => {
  server = await startTestPostgres();
  t = await startTestCoordinator(server.url);
  pool = new pg.Pool({ connectionString: t.coordinator.databaseUrl });
  await t.coordinator.catalog.upsert({ id: "priced", ...price });
  provider = new ScriptedProvider({
    baseUrl: t.url,
    models: [{ id: "priced" }],
    machineId: "m-money",
    maxBatch: 16,
    script: (r) =>
      (r.body as { slow?: boolean } | undefined)?.slow
        ? { tokens: Array.from({ length: 40 }, () => "x "), interTokenDelayMs: 25 }
        : { tokens: ["a ", "b "] },
  });
  await provider.start();
});
afterAll(async () => {
  await provider?.stop();
  await pool?.end();
  await t?.close();
  await server?.stop();
});

function admin() {
  return createClient(AdminService, createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" }));
}

async function account(name: string, credit = 0n): Promise<{ id: string; key: string }> {
  const created = await t.coordinator.accounts.createAccount({ name, initialCreditMicroUsd: credit });
  return { id: created.account.id, key: created.secret };
}

function get(path: string, key: string): Promise<Response> {
  return fetch(`${t.url}${path}`, { headers: { authorization: `Bearer ${key}` } });
}

async function expectError(res: Response, status: number, code: string, param: string | null) {
  expect(res.status).toBe(status);
  const body = await readJson(res);
  expect(Object.keys(body)).toEqual(["error"]);
  expect(body.error).toMatchObject({ code, param, type: expect.any(String) });
  expect(body.error.message.length).toBeGreaterThan(10);
  return body.error as { message: string };
}

/** An account's money in one bucket, summed from its ledger entries (system accounts have no balance row). */
async function bucket(accountId: string, name: "credited" | "earned"): Promise<bigint> {
  const { rows } = await pool.query<{ b: string }>(
    "SELECT coalesce(sum(amount_micro_usd), 0)::text AS b FROM ledger_entries WHERE account = $1 AND bucket = $2",
    [accountId, name],
  );
  return BigInt(rows[0]?.b ?? "0");
}

async function chat(
  key: string,
  extra: Record<string, unknown> = {},
): Promise<{ res: Response; body: AnyJson }> {
  const res = await postJson(t.url, "/v1/chat/completions", key, {
    model: "priced",
    messages: [{ role: "user", content: "Tell me about money." }],
    max_tokens: 50,
    ...extra,
  });
  return { res, body: extra.stream ? undefined : await readJson(res) };
}

async function settled(requestId: string): Promise<void> {
  await expect
    .poll(
      async () =>
        (await pool.query("SELECT state FROM reservations WHERE request_id = $1", [requestId])).rows[0]
          ?.state,
    )
    .toBe("settled");
}

async function createInvite(input: { credit: bigint; maxUses: number; code?: string; expiresAt?: Date }) {
  return admin().createInvite(
    {
      creditMicroUsd: input.credit,
      maxUses: input.maxUses,
      code: input.code ?? "",
      ...(input.expiresAt ? { expiresAt: timestampFromDate(input.expiresAt) } : {}),
    },
    { headers: authHeaders },
  );
}

describe("invite codes", () => {
  it("credit the redeeming account once, through the ledger", async () => {
    const { invite, code } = await createInvite({ credit: 2_500_000n, maxUses: 3 });
    expect(code).toMatch(/^[2-9B-DF-HJ-NP-TV-XZ]{4}(-[2-9B-DF-HJ-NP-TV-XZ]{4}){3}$/);
    const stored = await pool.query("SELECT code_hash, prefix FROM invites WHERE id = $1", [invite?.id]);
    expect(stored.rows[0].prefix).toBe(code.slice(0, 4));
    const a = await account("invitee");
    const res = await postJson(t.url, "/v1/invites/redeem", a.key, { code: code.toLowerCase() });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-ratelimit-limit")).toBe("20");
    expect(await readJson(res)).toEqual({
      invite_id: invite?.id,
      credited_micro_usd: 2_500_000,
      balance_micro_usd: 2_500_000,
    });
    expect(await bucket(a.id, "credited")).toBe(2_500_000n);
    const again = await expectError(
      await postJson(t.url, "/v1/invites/redeem", a.key, { code }),
      400,
      "invite_already_redeemed",
      "code",
    );
    expect(again.message).toMatch(/once/);
    expect(await bucket(a.id, "credited")).toBe(2_500_000n);
    const listed = await admin().listInvites({}, { headers: authHeaders });
    expect(listed.invites.find((i) => i.id === invite?.id)).toMatchObject({ uses: 1, maxUses: 3 });
  });

  it("never pass max_uses: 20 accounts at once on a 5-use invite get exactly 5 credits", async () => {
    const { invite, code } = await createInvite({ credit: 1_000n, maxUses: 5 });
    const accounts = await Promise.all(Array.from({ length: 20 }, (_, i) => account(`rush-${i}`)));
    const responses = await Promise.all(
      accounts.map((a) => postJson(t.url, "/v1/invites/redeem", a.key, { code })),
    );
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(5);
    expect(statuses.filter((s) => s === 400)).toHaveLength(15);
    for (const r of responses.filter((r) => r.status === 400)) {
      expect((await readJson(r)).error.code).toBe("invite_exhausted");
    }
    const credited = await Promise.all(accounts.map((a) => bucket(a.id, "credited")));
    expect(credited.filter((c) => c === 1_000n)).toHaveLength(5);
    expect(credited.filter((c) => c === 0n)).toHaveLength(15);
    const { rows } = await pool.query(
      "SELECT (SELECT uses FROM invites WHERE id = $1) AS uses, (SELECT count(*)::int FROM invite_redemptions WHERE invite_id = $1) AS n",
      [invite?.id],
    );
    expect(rows[0]).toEqual({ uses: 5, n: 5 });
  });

  it("credit one account once when it redeems concurrently", async () => {
    const { code } = await createInvite({ credit: 7_000n, maxUses: 10 });
    const a = await account("eager");
    const statuses = (
      await Promise.all(
        Array.from({ length: 8 }, () => postJson(t.url, "/v1/invites/redeem", a.key, { code })),
      )
    ).map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(await bucket(a.id, "credited")).toBe(7_000n);
  });

  it("refuse expired, revoked, unknown and malformed codes with specific errors", async () => {
    const a = await account("refused");
    const expiring = await createInvite({ credit: 1n, maxUses: 1, expiresAt: new Date(Date.now() + 60_000) });
    await pool.query("UPDATE invites SET expires_at = now() - interval '1 second' WHERE id = $1", [
      expiring.invite?.id,
    ]);
    await expectError(
      await postJson(t.url, "/v1/invites/redeem", a.key, { code: expiring.code }),
      400,
      "invite_expired",
      "code",
    );
    const revoked = await createInvite({ credit: 1n, maxUses: 1, code: "launch-party-2030" });
    expect(revoked.code).toBe("LAUN-CHPA-RTY2-030");
    const r = await admin().revokeInvite({ inviteId: revoked.invite?.id ?? "" }, { headers: authHeaders });
    expect(r.invite?.revokedAt).toBeDefined();
    await expectError(
      await postJson(t.url, "/v1/invites/redeem", a.key, { code: "Launch Party 2030" }),
      400,
      "invite_revoked",
      "code",
    );
    await expectError(
      await postJson(t.url, "/v1/invites/redeem", a.key, { code: "ZZZZ-ZZZZ" }),
      404,
      "invite_not_found",
      "code",
    );
    await expectError(
      await postJson(t.url, "/v1/invites/redeem", a.key, { code: "no!" }),
      400,
      "invalid_invite_code",
      "code",
    );
    await expectError(
      await postJson(t.url, "/v1/invites/redeem", a.key, {}),
      400,
      "missing_required_parameter",
      "code",
    );
    await expectError(
      await postJson(t.url, "/v1/invites/redeem", a.key, { code: ["x"] }),
      400,
      "invalid_type",
      "code",
    );
    await expectError(
      await postJson(t.url, "/v1/invites/redeem", "dbk_nope", { code: "x" }),
      401,
      "invalid_api_key",
      null,
    );
    expect(await bucket(a.id, "credited")).toBe(0n);

    // Admin input is checked too.
    await expect(createInvite({ credit: 0n, maxUses: 1 })).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
    await expect(createInvite({ credit: 1n, maxUses: 0 })).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
    await expect(
      createInvite({ credit: 1n, maxUses: 1, expiresAt: new Date(Date.now() - 1000) }),
    ).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
    await expect(createInvite({ credit: 1n, maxUses: 1, code: "launch-party-2030" })).rejects.toMatchObject({
      code: Code.AlreadyExists,
    });
    await expect(
      admin().revokeInvite({ inviteId: "inv_nope" }, { headers: authHeaders }),
    ).rejects.toMatchObject({
      code: Code.NotFound,
    });
  });
});

describe("referral codes", () => {
  it("are made once per account and set a referrer once, never oneself or a cycle", async () => {
    const a = await account("referrer");
    const b = await account("referred");
    const c = await account("third");
    const first = await readJson(await get("/v1/referrals/code", a.key));
    expect(first.referral_code).toMatch(/^[2-9B-DF-HJ-NP-TV-XZ]{8}$/);
    expect(await readJson(await get("/v1/referrals/code", a.key))).toEqual(first);
    const codeA = first.referral_code as string;
    const codeB = (await readJson(await get("/v1/referrals/code", b.key))).referral_code as string;
    const codeC = (await readJson(await get("/v1/referrals/code", c.key))).referral_code as string;
    expect(new Set([codeA, codeB, codeC]).size).toBe(3);

    await expectError(
      await postJson(t.url, "/v1/referrals/apply", a.key, { code: codeA }),
      400,
      "self_referral",
      "code",
    );
    await expectError(
      await postJson(t.url, "/v1/referrals/apply", b.key, { code: "ZZZZZZZZ" }),
      404,
      "referral_code_not_found",
      "code",
    );
    await expectError(
      await postJson(t.url, "/v1/referrals/apply", b.key, { code: "?" }),
      400,
      "invalid_referral_code",
      "code",
    );
    await expectError(
      await postJson(t.url, "/v1/referrals/apply", b.key, {}),
      400,
      "missing_required_parameter",
      "code",
    );

    const applied = await postJson(t.url, "/v1/referrals/apply", b.key, { code: codeA.toLowerCase() });
    expect(await readJson(applied)).toEqual({ referral_code: codeA, applied: true });
    expect(await readJson(await postJson(t.url, "/v1/referrals/apply", b.key, { code: codeA }))).toEqual({
      referral_code: codeA,
      applied: false,
    });
    await expectError(
      await postJson(t.url, "/v1/referrals/apply", b.key, { code: codeC }),
      400,
      "referrer_already_set",
      "code",
    );
    await expectError(
      await postJson(t.url, "/v1/referrals/apply", a.key, { code: codeB }),
      400,
      "referral_cycle",
      "code",
    );
    const { rows } = await pool.query(
      "SELECT id, referrer_id FROM accounts WHERE id = ANY($1) ORDER BY name",
      [[a.id, b.id]],
    );
    expect(rows).toEqual(
      expect.arrayContaining([
        { id: b.id, referrer_id: a.id },
        { id: a.id, referrer_id: null },
      ]),
    );
  });

  it("pay the referrer 20% of the 5% platform fee on the referred account's requests", async () => {
    const referrer = await account("paid referrer");
    const consumer = await account("referred consumer", 100_000_000n);
    const code = (await readJson(await get("/v1/referrals/code", referrer.key))).referral_code;
    expect((await postJson(t.url, "/v1/referrals/apply", consumer.key, { code })).status).toBe(200);
    const feesBefore = await bucket("platform:fees", "earned");

    const { res, body } = await chat(consumer.key);
    expect(res.status).toBe(200);
    const requestId = res.headers.get("x-request-id") ?? "";
    await settled(requestId);
    const charge = completedCharge(price, body.usage.prompt_tokens, body.usage.completion_tokens);
    const providerShare = (charge * 9_500n) / 10_000n;
    const fee = charge - providerShare;
    const referral = (fee * 2_000n) / 10_000n;
    expect(referral).toBeGreaterThan(0n);
    // Paid as credit: the referred account paid with (non-withdrawable) credit.
    expect(await bucket(referrer.id, "credited")).toBe(referral);
    expect(await bucket(referrer.id, "earned")).toBe(0n);
    expect(await bucket("platform:fees", "earned")).toBe(feesBefore + fee - referral);
    expect(await bucket(consumer.id, "credited")).toBe(100_000_000n - charge);

    const earnings = await readJson(await get("/v1/account/earnings", referrer.key));
    expect(earnings).toMatchObject({
      earned_micro_usd: 0,
      referral_earnings_micro_usd: Number(referral),
      provider_earnings_micro_usd: 0,
      requests_served: 0,
      data: [],
    });
    const verify = await admin().verifyLedger({}, { headers: authHeaders });
    expect(verify.discrepancies).toEqual([]);
  });
});

describe("balance, usage and earnings", () => {
  it("GET /v1/account splits the balance into credited, earned and held", async () => {
    const a = await account("balance", 5_000_000n);
    const res = await get("/v1/account", a.key);
    expect(res.status).toBe(200);
    expect(await readJson(res)).toEqual({
      object: "account",
      account_id: a.id,
      name: "balance",
      balance_micro_usd: 5_000_000,
      credited_micro_usd: 5_000_000,
      earned_micro_usd: 0,
      held_micro_usd: 0,
    });

    // While a request streams, its reservation is held.
    const stream = await postJson(t.url, "/v1/chat/completions", a.key, {
      model: "priced",
      messages: [{ role: "user", content: "slow" }],
      max_tokens: 100,
      stream: true,
      slow: true,
    });
    const requestId = stream.headers.get("x-request-id") ?? "";
    const { rows } = await pool.query(
      "SELECT amount_micro_usd::text AS held FROM reservations WHERE request_id = $1",
      [requestId],
    );
    const held = Number(rows[0].held);
    const during = await readJson(await get("/v1/account", a.key));
    expect(during).toMatchObject({ held_micro_usd: held, balance_micro_usd: 5_000_000 - held });
    await readSse(stream);
    await settled(requestId);
    const after = await readJson(await get("/v1/account", a.key));
    expect(after.held_micro_usd).toBe(0);
    expect(after.balance_micro_usd).toBeLessThan(5_000_000);
    expect(after.balance_micro_usd).toBeGreaterThan(5_000_000 - held);
  });

  it("GET /v1/account/usage lists requests newest first in keyset pages", async () => {
    const a = await account("usage", 50_000_000n);
    const ids: string[] = [];
    const timings: Record<string, number>[] = [];
    for (let i = 0; i < 3; i++) {
      const { res } = await chat(a.key);
      expect(res.status).toBe(200);
      ids.push(res.headers.get("x-request-id") ?? "");
      timings.push(JSON.parse(res.headers.get("x-timing") ?? "{}"));
    }
    for (const id of ids) await settled(id);
    // The phases are written off the serving path, about a second after settlement. (Waited for in
    // the database: polling the endpoint would spend the account's money-tier rate limit.)
    await expect
      .poll(
        async () =>
          (
            await pool.query("SELECT count(*)::int AS n FROM request_timings WHERE request_id = ANY($1)", [
              ids,
            ])
          ).rows[0].n,
        { timeout: 10_000, interval: 100 },
      )
      .toBe(3);
    const first = await readJson(await get("/v1/account/usage?limit=2", a.key));
    expect(first.object).toBe("list");
    expect(first.data.map((r: AnyJson) => r.request_id)).toEqual([ids[2], ids[1]]);
    expect(first.has_more).toBe(true);
    expect(first.next_before).toBe(ids[1]);
    expect(first.data[0]).toEqual({
      object: "usage.request",
      request_id: ids[2],
      model: "priced",
      state: "settled",
      outcome: "completed",
      prompt_tokens: expect.any(Number),
      completion_tokens: 2,
      reserved_micro_usd: expect.any(Number),
      charged_micro_usd: expect.any(Number),
      created_at: expect.any(Number),
      settled_at: expect.any(Number),
      timing: expect.any(Object),
    });
    // X-Timing's phases as they stood at settlement: the header's, with the time since in total.
    const recorded = first.data[0].timing as Record<string, number>;
    const header = timings[2] as Record<string, number>;
    expect(Object.keys(recorded)).toEqual(Object.keys(header));
    expect(recorded.total).toBeGreaterThanOrEqual(header.total as number);
    expect(recorded.route).toBe(header.route);
    expect(first.data[0].charged_micro_usd).toBeLessThanOrEqual(first.data[0].reserved_micro_usd);
    const second = await readJson(await get(`/v1/account/usage?limit=2&before=${first.next_before}`, a.key));
    expect(second.data.map((r: AnyJson) => r.request_id)).toEqual([ids[0]]);
    expect(second).toMatchObject({ has_more: false, next_before: null });
    const total = [...first.data, ...second.data].reduce(
      (s: number, r: AnyJson) => s + r.charged_micro_usd,
      0,
    );
    expect(await bucket(a.id, "credited")).toBe(50_000_000n - BigInt(total));

    await expectError(await get("/v1/account/usage?limit=0", a.key), 400, "invalid_value", "limit");
    await expectError(await get("/v1/account/usage?limit=101", a.key), 400, "invalid_value", "limit");
    await expectError(await get("/v1/account/usage?limit=x", a.key), 400, "invalid_value", "limit");
    await expectError(await get("/v1/account/usage?before=%20;", a.key), 400, "invalid_value", "before");
    // A cursor must be one of the caller's own requests.
    const other = await account("other");
    await expectError(
      await get(`/v1/account/usage?before=${ids[0]}`, other.key),
      400,
      "invalid_value",
      "before",
    );
    expect(await readJson(await get("/v1/account/usage", other.key))).toEqual({
      object: "list",
      data: [],
      has_more: false,
      next_before: null,
    });
    await expectError(await get("/v1/account/usage", "dbk_x"), 401, "invalid_api_key", null);

    const report = await admin().listUsage({ accountId: a.id, pageSize: 2 }, { headers: authHeaders });
    expect(report.records.map((r) => r.requestId)).toEqual([ids[2], ids[1]]);
    expect(report.nextPageToken).toBe(ids[1]);
    expect(report.creditedMicroUsd).toBe(50_000_000n - BigInt(total));
    const rest = await admin().listUsage(
      { accountId: a.id, pageToken: report.nextPageToken },
      { headers: authHeaders },
    );
    expect(rest.records.map((r) => r.requestId)).toEqual([ids[0]]);
    expect(rest.nextPageToken).toBe("");
    await expect(
      admin().listUsage({ accountId: "acct_nope" }, { headers: authHeaders }),
    ).rejects.toMatchObject({
      code: Code.NotFound,
    });
  });

  it("GET /v1/account/earnings is empty for an account that served nothing", async () => {
    const a = await account("idle");
    expect(await readJson(await get("/v1/account/earnings", a.key))).toEqual({
      object: "earnings",
      account_id: a.id,
      earned_micro_usd: 0,
      provider_earnings_micro_usd: 0,
      referral_earnings_micro_usd: 0,
      requests_served: 0,
      data: [],
      has_more: false,
      next_before: null,
    });
  });

  it("GET /v1/account/machines lists the account's connected machines with their trust, and no one else's", async () => {
    const owner = await account("machine owner");
    const stranger = await account("stranger");
    const code = await readJson(await postJson(t.url, "/v1/device/code", undefined, {}));
    expect(
      (await postJson(t.url, "/v1/device/approve", owner.key, { user_code: code.user_code })).status,
    ).toBe(200);
    const token = await readJson(
      await postJson(t.url, "/v1/device/token", undefined, { device_code: code.device_code }),
    );
    const machine = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "priced" }, { id: "other" }],
      machineId: "owner-machine",
      accountToken: token.provider_token,
    });
    await machine.start();
    try {
      const listed = await readJson(await get("/v1/account/machines", owner.key));
      expect(listed).toMatchObject({ object: "list" });
      expect(listed.data).toHaveLength(1);
      expect(listed.data[0]).toMatchObject({
        object: "machine",
        provider_id: machine.providerId,
        machine_id: "owner-machine",
        state: "idle",
        models: [
          { id: "priced", loaded: expect.any(Boolean) },
          { id: "other", loaded: expect.any(Boolean) },
        ],
        trust_level: expect.any(String),
        reasons: expect.any(Array),
        connected_at: expect.any(Number),
      });
      // The judgement is the published one (GET /v1/providers/attestation), found for the owner.
      const published = (await readJson(await fetch(`${t.url}/v1/providers/attestation`))).data.find(
        (p: AnyJson) => p.provider_id === machine.providerId,
      );
      expect(listed.data[0].trust_level).toBe(published.trust_level);
      expect(listed.data[0].last_challenge).toEqual(published.last_challenge);
      // The fixture's unlinked provider and the stranger's nothing.
      expect((await readJson(await get("/v1/account/machines", stranger.key))).data).toEqual([]);
      expect((await get("/v1/account/machines", "dbk_wrong")).status).toBe(401);
    } finally {
      await machine.stop();
    }
  });
});

describe("API keys of one's own account", () => {
  it("are created (the secret once), listed without secrets, and revoked, never another account's", async () => {
    const ada = await account("keys-ada");
    const bob = await account("keys-bob");
    const created = await postJson(t.url, "/v1/account/keys", ada.key, { name: "laptop" });
    expect(created.status).toBe(200);
    const issued = await readJson(created);
    expect(issued).toMatchObject({ object: "api_key", name: "laptop", revoked_at: null, last_used_at: null });
    expect(issued.key).toMatch(/^dbk_/);
    expect(issued.key.startsWith(issued.prefix)).toBe(true);
    expect((await get("/v1/account", issued.key)).status).toBe(200);

    const listed = await readJson(await get("/v1/account/keys", ada.key));
    expect(listed.data.map((k: { id: string }) => k.id)).toContain(issued.id);
    expect(JSON.stringify(listed)).not.toContain(issued.key);
    expect(JSON.stringify(listed)).not.toContain(ada.key);

    // Another account's key is not found, and stays usable.
    await expectError(
      await postJson(t.url, "/v1/account/keys/revoke", bob.key, { id: issued.id }),
      404,
      "not_found",
      null,
    );
    expect((await get("/v1/account", issued.key)).status).toBe(200);
    const revoked = await readJson(
      await postJson(t.url, "/v1/account/keys/revoke", ada.key, { id: issued.id }),
    );
    expect(revoked.revoked_at).toEqual(expect.any(Number));
    expect((await get("/v1/account", issued.key)).status).toBe(401);
    await expectError(
      await postJson(t.url, "/v1/account/keys/revoke", ada.key, {}),
      400,
      "missing_required_parameter",
      "id",
    );
    await expectError(
      await postJson(t.url, "/v1/account/keys", ada.key, { name: 5 }),
      400,
      "invalid_type",
      "name",
    );
  });
});

describe("rate-limit tiers", () => {
  let limited: TestCoordinator;

  beforeAll(async () => {
    limited = await startTestCoordinator(server.url, {
      rateLimitPerSecond: 0.01,
      rateLimitBurst: 2,
      moneyRateLimitPerSecond: 0.01,
      moneyRateLimitBurst: 3,
    });
  });
  afterAll(async () => {
    await limited?.close();
  });

  it("keeps separate buckets for money and inference routes, both answering 429 with headers", async () => {
    const call = (path: string) =>
      fetch(`${limited.url}${path}`, { headers: { authorization: `Bearer ${limited.apiKey}` } });
    const remaining: string[] = [];
    for (const path of ["/v1/account", "/v1/referrals/code", "/v1/account/usage"]) {
      const res = await call(path);
      expect(res.status).toBe(200);
      expect(res.headers.get("x-ratelimit-limit")).toBe("3");
      remaining.push(res.headers.get("x-ratelimit-remaining") ?? "");
    }
    expect(remaining).toEqual(["2", "1", "0"]);
    for (const res of [
      await call("/v1/account/earnings"),
      await postJson(limited.url, "/v1/invites/redeem", limited.apiKey, { code: "ABCD-EFGH" }),
      await postJson(limited.url, "/v1/device/approve", limited.apiKey, { user_code: "BCDF-GHJK" }),
    ]) {
      const error = await expectError(res, 429, "rate_limit_exceeded", null);
      expect(error.message).toMatch(/money requests per second/);
      expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
      expect(res.headers.get("x-ratelimit-limit")).toBe("3");
      expect(res.headers.get("x-ratelimit-remaining")).toBe("0");
      expect(res.headers.get("x-ratelimit-reset")).toMatch(/^\d+$/);
    }

    // The inference tier has its own bucket, untouched by the money calls.
    const infer = () => postJson(limited.url, "/v1/chat/completions", limited.apiKey, "{bad json");
    const first = await infer();
    expect(first.status).toBe(400);
    expect(first.headers.get("x-ratelimit-limit")).toBe("2");
    expect(first.headers.get("x-ratelimit-remaining")).toBe("1");
    expect((await infer()).status).toBe(400);
    const refused = await infer();
    const error = await expectError(refused, 429, "rate_limit_exceeded", null);
    expect(error.message).toMatch(/inference requests per second/);
    expect(refused.headers.get("retry-after")).toBeTruthy();

    // Other accounts have buckets of their own.
    const other = await limited.coordinator.accounts.createAccount({ name: "fresh" });
    const fresh = await fetch(`${limited.url}/v1/account`, {
      headers: { authorization: `Bearer ${other.secret}` },
    });
    expect(fresh.status).toBe(200);
  });

  it("limits device-code creation per client address", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++)
      statuses.push((await postJson(limited.url, "/v1/device/code", undefined, {})).status);
    expect(statuses).toEqual([200, 200, 200, 429]);
  });
});

describe("logging", () => {
  it("never writes keys, tokens or codes, even at trace level", async () => {
    const lines: string[] = [];
    const logger = pino({ level: "trace" }, { write: (line: string) => lines.push(line) });
    const db = await createTestDatabase(server.url);
    const dataDir = await mkdtemp(join(tmpdir(), "darkbloom-log-"));
    const c = await startCoordinator(
      {
        dataDir,
        adminKey: TEST_ADMIN_KEY,
        databaseUrl: db.url,
        port: 0,
        heartbeatIntervalMs: 1_000,
        minTrustLevel: "none",
      },
      { logger },
    );
    const p: ScriptedProvider[] = [];
    try {
      const { secret: key } = await c.accounts.createAccount({
        name: "log",
        initialCreditMicroUsd: 1_000_000n,
      });
      const started = await readJson(await postJson(c.url, "/v1/device/code", undefined, {}));
      await postJson(c.url, "/v1/device/token", undefined, { device_code: started.device_code });
      await postJson(c.url, "/v1/device/approve", key, { user_code: started.user_code });
      const { provider_token } = await readJson(
        await postJson(c.url, "/v1/device/token", undefined, { device_code: started.device_code }),
      );
      p.push(new ScriptedProvider({ baseUrl: c.url, models: [{ id: "m" }], accountToken: provider_token }));
      await p[0]!.start();
      const badToken = `dbp_${"Q".repeat(43)}`;
      p.push(new ScriptedProvider({ baseUrl: c.url, models: [{ id: "m" }], accountToken: badToken }));
      await expect(p[1]!.start()).rejects.toBeDefined();
      const client = createClient(
        AdminService,
        createConnectTransport({ baseUrl: c.url, httpVersion: "1.1" }),
      );
      const { code } = await client.createInvite(
        { creditMicroUsd: 5n, maxUses: 1 },
        { headers: authHeaders },
      );
      await postJson(c.url, "/v1/invites/redeem", key, { code });
      await postJson(c.url, "/v1/invites/redeem", key, { code });
      const referral = (await readJson(await get2(c.url, "/v1/referrals/code", key))).referral_code;
      await postJson(c.url, "/v1/referrals/apply", key, { code: referral });
      await postJson(c.url, "/v1/chat/completions", key, {
        model: "m",
        messages: [{ role: "user", content: "hi" }],
      });

      const text = lines.join("");
      expect(text).toContain("provider registered");
      expect(text).toContain("invalid account token");
      for (const secret of [
        key,
        started.device_code,
        started.user_code,
        started.user_code.replace("-", ""),
        provider_token,
        badToken,
        code,
        code.replaceAll("-", ""),
        TEST_ADMIN_KEY,
      ]) {
        expect(text).not.toContain(secret);
      }
    } finally {
      for (const provider of p) await provider.stop();
      await c.close({ drainMs: 0 });
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

function get2(url: string, path: string, key: string): Promise<Response> {
  return fetch(`${url}${path}`, { headers: { authorization: `Bearer ${key}` } });
}
