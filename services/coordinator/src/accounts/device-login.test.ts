import { Code, ConnectError } from "@connectrpc/connect";
import { ScriptedProvider } from "@darkbloom/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { completedCharge } from "../billing/pricing.js";
import {
  type AnyJson,
  postJson,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { sha256 } from "./codes.js";

let server: TestPostgres;
let t: TestCoordinator;
let pool: pg.Pool;
const price = { inputMicroUsdPerMillion: 1_000_000_000n, outputMicroUsdPerMillion: 2_000_000_000n };

beforeAll(async () => {
  server = await startTestPostgres();
  t = await startTestCoordinator(server.url);
  pool = new pg.Pool({ connectionString: t.coordinator.databaseUrl });
});
afterAll(async () => {
  await pool?.end();
  await t?.close();
  await server?.stop();
});

async function account(name: string): Promise<{ id: string; key: string }> {
  const created = await t.coordinator.accounts.createAccount({ name });
  return { id: created.account.id, key: created.secret };
}

async function expectError(res: Response, status: number, code: string, param: string | null) {
  expect(res.status).toBe(status);
  expect(res.headers.get("x-request-id")).toMatch(/^req_/);
  const body = await readJson(res);
  expect(Object.keys(body)).toEqual(["error"]);
  expect(body.error).toMatchObject({ code, param, type: expect.any(String) });
  expect(body.error.message.length).toBeGreaterThan(10);
  return body.error as { message: string; type: string };
}

async function startLogin(): Promise<AnyJson> {
  const res = await postJson(t.url, "/v1/device/code", undefined, {});
  expect(res.status).toBe(200);
  return readJson(res);
}

const poll = (deviceCode: string) =>
  postJson(t.url, "/v1/device/token", undefined, { device_code: deviceCode });

async function earned(accountId: string): Promise<bigint> {
  const { rows } = await pool.query<{ b: string }>(
    "SELECT coalesce(sum(amount_micro_usd), 0)::text AS b FROM balances WHERE account = $1 AND bucket = 'earned'",
    [accountId],
  );
  return BigInt(rows[0]?.b ?? "0");
}

describe("device-code login", () => {
  it("links a provider to the approving account: pending, slow_down, approve, one token, earnings paid", async () => {
    const owner = await account("provider owner");
    const started = await startLogin();
    expect(started).toEqual({
      device_code: expect.stringMatching(/^dbd_[0-9A-Za-z]{43}$/),
      user_code: expect.stringMatching(/^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/),
      verification_uri: `${t.url}/v1/device/approve`,
      expires_in: 900,
      interval: 5,
    });

    // Only hashes are stored.
    const { rows } = await pool.query("SELECT * FROM device_codes WHERE device_code_hash = $1", [
      sha256(started.device_code),
    ]);
    expect(rows).toHaveLength(1);
    expect(JSON.stringify(rows[0])).not.toContain(started.device_code);
    expect(JSON.stringify(rows[0])).not.toContain(started.user_code.replace("-", ""));

    const pending = await expectError(
      await poll(started.device_code),
      400,
      "authorization_pending",
      "device_code",
    );
    expect(pending.type).toBe("invalid_request_error");
    const slow = await expectError(await poll(started.device_code), 400, "slow_down", "device_code");
    expect(slow.message).toMatch(/10 seconds/);

    // The user code is typed case-insensitively and with or without its dash.
    const approve = await postJson(t.url, "/v1/device/approve", owner.key, {
      user_code: started.user_code.toLowerCase().replace("-", ""),
    });
    expect(approve.status).toBe(200);
    expect(approve.headers.get("x-ratelimit-limit")).toBe("20");
    expect(await readJson(approve)).toEqual({
      user_code: started.user_code,
      account_id: owner.id,
      approved: true,
    });

    const exchanged = await poll(started.device_code);
    expect(exchanged.status).toBe(200);
    const token = await readJson(exchanged);
    expect(token).toEqual({
      provider_token: expect.stringMatching(/^dbp_[0-9A-Za-z]{43}$/),
      account_id: owner.id,
      token_type: "provider",
    });
    const stored = await pool.query(
      "SELECT token_hash, account_id FROM provider_tokens WHERE account_id = $1",
      [owner.id],
    );
    expect(stored.rows).toEqual([{ token_hash: sha256(token.provider_token), account_id: owner.id }]);
    // Exactly one token per device code.
    await expectError(await poll(started.device_code), 400, "invalid_grant", "device_code");

    await t.coordinator.catalog.upsert({ id: "linked-model", ...price });
    const provider = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "linked-model" }],
      machineId: "m-linked",
      accountToken: token.provider_token,
    });
    await provider.start();
    try {
      expect(t.coordinator.registry.get(provider.providerId ?? "")?.payoutAccount).toBe(owner.id);
      const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, {
        model: "linked-model",
        messages: [{ role: "user", content: "Who gets paid?" }],
        max_tokens: 100,
      });
      expect(res.status).toBe(200);
      const body = await readJson(res);
      const requestId = res.headers.get("x-request-id");
      const charge = completedCharge(price, body.usage.prompt_tokens, body.usage.completion_tokens);
      const share = (charge * 9_500n) / 10_000n;
      await expect.poll(() => earned(owner.id)).toBe(share);
      expect(await earned("provider:m-linked")).toBe(0n);

      const earnings = await readJson(
        await fetch(`${t.url}/v1/account/earnings`, { headers: { authorization: `Bearer ${owner.key}` } }),
      );
      expect(earnings).toMatchObject({
        object: "earnings",
        account_id: owner.id,
        earned_micro_usd: Number(share),
        provider_earnings_micro_usd: Number(share),
        referral_earnings_micro_usd: 0,
        requests_served: 1,
        has_more: false,
        next_before: null,
      });
      expect(earnings.data).toEqual([
        expect.objectContaining({
          request_id: requestId,
          model: "linked-model",
          charged_micro_usd: Number(charge),
          earned_micro_usd: Number(share),
          completion_tokens: body.usage.completion_tokens,
        }),
      ]);
    } finally {
      await provider.stop();
    }
  });

  it("keeps provider:<machine_id> for a provider without a token", async () => {
    const provider = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "unlinked" }],
      machineId: "m-free",
    });
    await provider.start();
    try {
      expect(t.coordinator.registry.get(provider.providerId ?? "")?.payoutAccount).toBe("provider:m-free");
    } finally {
      await provider.stop();
    }
  });

  it("refuses a Register with an unknown, malformed or revoked account token", async () => {
    for (const accountToken of [`dbp_${"A".repeat(43)}`, "not-a-token"]) {
      const provider = new ScriptedProvider({ baseUrl: t.url, models: [{ id: "m" }], accountToken });
      const error = await provider.start().then(
        () => undefined,
        (e: unknown) => e,
      );
      await provider.stop();
      expect(error).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code).toBe(Code.Unauthenticated);
      expect((error as ConnectError).rawMessage).toMatch(/account_token is not valid.*darkbloom login/);
    }
    expect(t.coordinator.sessions.size).toBe(0);

    // A token that worked stops working once revoked.
    const owner = await account("revoker");
    const started = await startLogin();
    await postJson(t.url, "/v1/device/approve", owner.key, { user_code: started.user_code });
    const { provider_token } = await readJson(await poll(started.device_code));
    const revoke = await postJson(t.url, "/v1/device/revoke", undefined, { provider_token });
    expect(await readJson(revoke)).toEqual({ revoked: true });
    const provider = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "m" }],
      accountToken: provider_token,
    });
    await expect(provider.start()).rejects.toMatchObject({ code: Code.Unauthenticated });
    await provider.stop();
    expect(
      await readJson(await postJson(t.url, "/v1/device/revoke", undefined, { provider_token: "x" })),
    ).toEqual({
      revoked: false,
    });
  });

  it("answers expired_token once the code has expired, and refuses to approve it", async () => {
    const owner = await account("late");
    const started = await startLogin();
    await pool.query(
      "UPDATE device_codes SET expires_at = now() - interval '1 second' WHERE device_code_hash = $1",
      [sha256(started.device_code)],
    );
    await expectError(await poll(started.device_code), 400, "expired_token", "device_code");
    await expectError(
      await postJson(t.url, "/v1/device/approve", owner.key, { user_code: started.user_code }),
      400,
      "user_code_expired",
      "user_code",
    );
  });

  it("answers access_denied after the owner denies the code", async () => {
    const owner = await account("denier");
    const started = await startLogin();
    const deny = await postJson(t.url, "/v1/device/deny", owner.key, { user_code: started.user_code });
    expect(await readJson(deny)).toEqual({ user_code: started.user_code, denied: true });
    await expectError(await poll(started.device_code), 400, "access_denied", "device_code");
    await expectError(
      await postJson(t.url, "/v1/device/approve", owner.key, { user_code: started.user_code }),
      400,
      "user_code_already_used",
      "user_code",
    );
  });

  it("refuses bad input with specific codes and params", async () => {
    const owner = await account("owner");
    const other = await account("other");
    await expectError(
      await postJson(t.url, "/v1/device/token", undefined, {}),
      400,
      "missing_required_parameter",
      "device_code",
    );
    await expectError(
      await postJson(t.url, "/v1/device/token", undefined, { device_code: 7 }),
      400,
      "invalid_type",
      "device_code",
    );
    await expectError(
      await postJson(t.url, "/v1/device/token", undefined, "{nope"),
      400,
      "invalid_json",
      null,
    );
    await expectError(await postJson(t.url, "/v1/device/token", undefined, "[]"), 400, "invalid_json", null);
    await expectError(await poll("dbd_short"), 400, "invalid_grant", "device_code");
    await expectError(await poll(`dbd_${"B".repeat(43)}`), 400, "invalid_grant", "device_code");

    await expectError(
      await postJson(t.url, "/v1/device/approve", undefined, { user_code: "BCDF-GHJK" }),
      401,
      "invalid_api_key",
      null,
    );
    await expectError(
      await postJson(t.url, "/v1/device/approve", owner.key, {}),
      400,
      "missing_required_parameter",
      "user_code",
    );
    await expectError(
      await postJson(t.url, "/v1/device/approve", owner.key, { user_code: "AEIO-U123" }),
      400,
      "invalid_user_code",
      "user_code",
    );
    await expectError(
      await postJson(t.url, "/v1/device/approve", owner.key, { user_code: "BBBB-BBBB" }),
      404,
      "user_code_not_found",
      "user_code",
    );

    // Approving twice with one account is fine; another account cannot take the code over.
    const started = await startLogin();
    expect(
      (await postJson(t.url, "/v1/device/approve", owner.key, { user_code: started.user_code })).status,
    ).toBe(200);
    expect(
      (await postJson(t.url, "/v1/device/approve", owner.key, { user_code: started.user_code })).status,
    ).toBe(200);
    await expectError(
      await postJson(t.url, "/v1/device/approve", other.key, { user_code: started.user_code }),
      400,
      "user_code_already_used",
      "user_code",
    );
    const wrongMethod = await fetch(`${t.url}/v1/device/code`);
    expect(wrongMethod.status).toBe(405);
  });
});
