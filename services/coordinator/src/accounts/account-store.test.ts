import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { PROMOTIONS_ACCOUNT } from "../store/ledger.js";
import {
  createTestDatabase,
  startTestPostgres,
  type TestDatabase,
  type TestPostgres,
} from "../testing/test-database.js";
import { AccountStore } from "./account-store.js";
import { hashApiKey } from "./api-key.js";
import {
  AccountNotFoundError,
  ApiKeyNotFoundError,
  IdempotencyKeyReusedError,
  InvalidArgumentError,
} from "./errors.js";

let server: TestPostgres;
let db: TestDatabase;
let store: AccountStore;

beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});
beforeEach(async () => {
  db = await createTestDatabase(server.url);
  store = new AccountStore(db.pool);
});
afterEach(async () => {
  await db?.drop();
});

async function allRowsAsText(): Promise<string> {
  const tables = ["accounts", "api_keys", "ledger_transactions", "ledger_entries"];
  const dumps = await Promise.all(
    tables.map(async (table) => (await db.pool.query(`SELECT t::text AS row FROM ${table} t`)).rows),
  );
  return JSON.stringify(dumps);
}

describe("createAccount", () => {
  it("creates the account, its first key and its credit together", async () => {
    const { account, apiKey, secret } = await store.createAccount({
      name: "Ada",
      initialCreditMicroUsd: 5_000_000n,
    });
    expect(account).toMatchObject({ name: "Ada", disabled: false, balanceMicroUsd: 5_000_000n });
    expect(account.id).toMatch(/^acct_/);
    expect(apiKey).toMatchObject({ accountId: account.id, name: "default", revokedAt: null });
    expect(apiKey.prefix).toBe(secret.slice(0, 12));
    expect(await store.getAccount(account.id)).toEqual(account);
    expect(await store.authenticateApiKey(secret)).toEqual({ accountId: account.id, keyId: apiKey.id });
  });

  it("leaves nothing behind when any part fails", async () => {
    await expect(store.createAccount({ name: "x".repeat(201) })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(store.createAccount({ name: "  " })).rejects.toThrow(/name is required/);
    await expect(store.createAccount({ name: "n", initialCreditMicroUsd: -1n })).rejects.toThrow(
      /initial_credit_micro_usd must be an integer from 0/,
    );
    // The credit is posted after the account and key: make it fail at COMMIT and check nothing stays.
    await db.pool.query(
      `CREATE FUNCTION fail_credit() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'credit refused'; END $$;
       CREATE TRIGGER fail_credit BEFORE INSERT ON ledger_entries FOR EACH ROW EXECUTE FUNCTION fail_credit();`,
    );
    await expect(store.createAccount({ name: "Bob", initialCreditMicroUsd: 1n })).rejects.toThrow(
      /credit refused/,
    );
    const { rows } = await db.pool.query(
      "SELECT (SELECT count(*) FROM accounts)::int AS accounts, (SELECT count(*) FROM api_keys)::int AS keys",
    );
    expect(rows[0]).toEqual({ accounts: 0, keys: 0 });
  });

  it("creates no ledger transaction without an initial credit", async () => {
    const { account } = await store.createAccount({ name: "Zero" });
    expect(account.balanceMicroUsd).toBe(0n);
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM ledger_transactions");
    expect(rows[0].n).toBe(0);
  });
});

describe("API keys", () => {
  it("are shown once and stored only as a SHA-256 hash", async () => {
    const first = await store.createAccount({ name: "Ada", initialCreditMicroUsd: 1n });
    const second = await store.createApiKey(first.account.id, "ci");
    expect(second.apiKey).toMatchObject({ name: "ci", accountId: first.account.id });
    const dump = await allRowsAsText();
    for (const secret of [first.secret, second.secret]) {
      expect(dump).not.toContain(secret);
      expect(dump).not.toContain(secret.slice(12)); // not even the part after the shown prefix
    }
    const { rows } = await db.pool.query("SELECT key_hash FROM api_keys WHERE id = $1", [second.apiKey.id]);
    expect(rows[0].key_hash.equals(hashApiKey(second.secret))).toBe(true);
    const listed = await store.listApiKeys(first.account.id);
    expect(listed.map((key) => key.id)).toEqual([second.apiKey.id, first.apiKey.id]);
    expect(JSON.stringify(listed)).not.toContain(second.secret);
  });

  it("stop authenticating once revoked, and revoking twice keeps the first time", async () => {
    const { account, secret, apiKey } = await store.createAccount({ name: "Ada" });
    const other = await store.createApiKey(account.id);
    const revoked = await store.revokeApiKey(apiKey.id);
    expect(revoked.revokedAt).toBeInstanceOf(Date);
    expect(await store.authenticateApiKey(secret)).toBeNull();
    expect(await store.authenticateApiKey(other.secret)).toEqual({
      accountId: account.id,
      keyId: other.apiKey.id,
    });
    const again = await store.revokeApiKey(apiKey.id);
    expect(again.revokedAt).toEqual(revoked.revokedAt);
  });

  it("do not authenticate for a disabled account, and do again once it is enabled", async () => {
    const { account, secret } = await store.createAccount({ name: "Ada" });
    expect((await store.setAccountDisabled(account.id, true)).disabled).toBe(true);
    expect(await store.authenticateApiKey(secret)).toBeNull();
    await store.setAccountDisabled(account.id, false);
    expect(await store.authenticateApiKey(secret)).not.toBeNull();
  });

  it("reject unknown and malformed secrets", async () => {
    const { secret } = await store.createAccount({ name: "Ada" });
    const unknown = `${secret.slice(0, -1)}${secret.endsWith("A") ? "B" : "A"}`;
    for (const bad of [unknown, "", "dbk_short", `Bearer ${secret}`]) {
      expect(await store.authenticateApiKey(bad)).toBeNull();
    }
  });

  it("record use at most once a minute", async () => {
    const { secret, apiKey } = await store.createAccount({ name: "Ada" });
    const lastUsed = async () =>
      (await db.pool.query("SELECT last_used_at FROM api_keys WHERE id = $1", [apiKey.id])).rows[0]
        .last_used_at;
    expect(await lastUsed()).toBeNull();
    await store.authenticateApiKey(secret);
    const first = await lastUsed();
    expect(first).toBeInstanceOf(Date);
    for (let i = 0; i < 5; i++) await store.authenticateApiKey(secret);
    expect(await lastUsed()).toEqual(first);
    // Another coordinator (a fresh store) also sees the recent write and leaves it alone.
    await new AccountStore(db.pool).authenticateApiKey(secret);
    expect(await lastUsed()).toEqual(first);
  });

  it("name their account when it does not exist", async () => {
    await expect(store.createApiKey("acct_missing")).rejects.toThrow(
      new AccountNotFoundError("acct_missing"),
    );
    await expect(store.listApiKeys("acct_missing")).rejects.toBeInstanceOf(AccountNotFoundError);
    await expect(store.revokeApiKey("key_missing")).rejects.toThrow(new ApiKeyNotFoundError("key_missing"));
    const { account } = await store.createAccount({ name: "Ada" });
    await db.pool.query("DELETE FROM api_keys");
    expect(await store.listApiKeys(account.id)).toEqual([]);
  });
});

describe("credit", () => {
  it("applies once under 20 concurrent calls with one idempotency key", async () => {
    const { account } = await store.createAccount({ name: "Ada" });
    const results = await Promise.all(
      Array.from({ length: 20 }, () =>
        store.credit({
          accountId: account.id,
          amountMicroUsd: 2_500_000n,
          idempotencyKey: "promo-1",
          note: "welcome",
        }),
      ),
    );
    expect(results.filter((result) => result.applied)).toHaveLength(1);
    for (const result of results) expect(result.account.balanceMicroUsd).toBe(2_500_000n);
    expect((await store.getAccount(account.id)).balanceMicroUsd).toBe(2_500_000n);
    const { rows } = await db.pool.query(
      "SELECT count(*)::int AS n, min(note) AS note FROM ledger_transactions",
    );
    expect(rows[0]).toEqual({ n: 1, note: "welcome" });
  });

  it("keeps every ledger transaction balanced, funded by the promotions account", async () => {
    const { account } = await store.createAccount({ name: "Ada", initialCreditMicroUsd: 7n });
    const other = await store.createAccount({ name: "Bob" });
    await store.credit({ accountId: account.id, amountMicroUsd: 11n, idempotencyKey: "a" });
    await store.credit({ accountId: other.account.id, amountMicroUsd: 13n, idempotencyKey: "b" });
    const unbalanced = await db.pool.query(
      "SELECT transaction_id FROM ledger_entries GROUP BY transaction_id HAVING sum(amount_micro_usd) <> 0",
    );
    expect(unbalanced.rows).toEqual([]);
    const { rows } = await db.pool.query(
      "SELECT account, sum(amount_micro_usd)::text AS total FROM ledger_entries GROUP BY account ORDER BY account",
    );
    expect(Object.fromEntries(rows.map((row) => [row.account, row.total]))).toEqual({
      [account.id]: "18",
      [other.account.id]: "13",
      [PROMOTIONS_ACCOUNT]: "-31",
    });
  });

  it("refuses a reused key for another account or amount, and bad input", async () => {
    const { account } = await store.createAccount({ name: "Ada" });
    const other = await store.createAccount({ name: "Bob" });
    await store.credit({ accountId: account.id, amountMicroUsd: 5n, idempotencyKey: "k" });
    await expect(
      store.credit({ accountId: account.id, amountMicroUsd: 6n, idempotencyKey: "k" }),
    ).rejects.toBeInstanceOf(IdempotencyKeyReusedError);
    await expect(
      store.credit({ accountId: other.account.id, amountMicroUsd: 5n, idempotencyKey: "k" }),
    ).rejects.toBeInstanceOf(IdempotencyKeyReusedError);
    await expect(
      store.credit({ accountId: account.id, amountMicroUsd: 0n, idempotencyKey: "z" }),
    ).rejects.toThrow(/amount_micro_usd must be an integer from 1/);
    await expect(
      store.credit({ accountId: account.id, amountMicroUsd: 2n ** 63n, idempotencyKey: "z" }),
    ).rejects.toThrow(InvalidArgumentError);
    await expect(
      store.credit({ accountId: account.id, amountMicroUsd: 1n, idempotencyKey: " " }),
    ).rejects.toThrow(/idempotency_key must be 1 to 200 characters/);
    await expect(
      store.credit({ accountId: "acct_nope", amountMicroUsd: 1n, idempotencyKey: "n" }),
    ).rejects.toThrow(new AccountNotFoundError("acct_nope"));
    expect((await store.getAccount(account.id)).balanceMicroUsd).toBe(5n);
  });
});

describe("listAccounts", () => {
  it("pages newest first without gaps or repeats, even for accounts created in one instant", async () => {
    const created: string[] = [];
    for (let i = 0; i < 7; i++) created.push((await store.createAccount({ name: `a${i}` })).account.id);
    // Same created_at for a batch: the id breaks the tie.
    await db.pool.query(
      "INSERT INTO accounts (id, name, created_at) SELECT 'acct_same' || g, 'same', '2020-01-01' FROM generate_series(1, 5) g",
    );
    const seen: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await store.listAccounts({ pageSize: 3, pageToken: token });
      seen.push(...page.accounts.map((account) => account.id));
      token = page.nextPageToken;
      pages++;
    } while (token !== "");
    expect(pages).toBe(4);
    expect(seen.slice(0, 7)).toEqual([...created].reverse());
    expect(seen.slice(7)).toEqual(["acct_same5", "acct_same4", "acct_same3", "acct_same2", "acct_same1"]);
  });

  it("defaults and caps the page size and rejects a malformed token", async () => {
    await store.createAccount({ name: "a" });
    expect((await store.listAccounts()).accounts).toHaveLength(1);
    await expect(store.listAccounts({ pageToken: "garbage" })).rejects.toThrow(/page_token is malformed/);
    await expect(store.listAccounts({ pageSize: -1 })).rejects.toThrow(/page_size must be a whole number/);
    for (let i = 0; i < 3; i++) await store.createAccount({ name: `b${i}` });
    expect((await store.listAccounts({ pageSize: 100_000 })).accounts).toHaveLength(4);
  });
});
