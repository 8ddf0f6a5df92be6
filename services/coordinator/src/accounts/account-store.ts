import type pg from "pg";
import type { Logger } from "pino";
import { ledgerEntriesFor, PROMOTIONS_ACCOUNT, postLedgerTransaction } from "../store/ledger.js";
import { withTransaction } from "../store/transaction.js";
import { displayPrefix, generateApiKey, generateId, hashApiKey, looksLikeApiKey } from "./api-key.js";
import { normaliseCode } from "./codes.js";
import {
  AccountNotFoundError,
  ApiKeyNotFoundError,
  IdempotencyKeyReusedError,
  InvalidArgumentError,
  ReferralCodeNotFoundError,
} from "./errors.js";

export interface Account {
  id: string;
  name: string;
  createdAt: Date;
  disabled: boolean;
  /** Credited plus earned, in micro-USD: the sum of the account's ledger entries. */
  balanceMicroUsd: bigint;
  /** The account's referral code; null until it is first asked for. */
  referralCode: string | null;
  /** The account that referred this one, if any. */
  referrerId: string | null;
}

/** An API key as stored: never its secret. */
export interface ApiKeyRecord {
  id: string;
  accountId: string;
  name: string;
  /** The secret's first characters, for recognising it. */
  prefix: string;
  createdAt: Date;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

/** A newly issued key: `secret` exists only here and is never stored. */
export interface IssuedApiKey {
  apiKey: ApiKeyRecord;
  secret: string;
}

export interface AuthenticatedKey {
  accountId: string;
  keyId: string;
}

export interface AccountPage {
  accounts: Account[];
  /** Continues the listing; empty on the last page. */
  nextPageToken: string;
}

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;
const MAX_NAME_LENGTH = 200;
const MAX_IDEMPOTENCY_KEY_LENGTH = 200;
const MAX_NOTE_LENGTH = 1000;
const MAX_INT64 = 2n ** 63n - 1n;
/** `last_used_at` is written at most this often per key. */
const LAST_USED_RESOLUTION_MS = 60_000;

const ACCOUNT_COLUMNS = `a.id, a.name, a.created_at, a.disabled, a.referral_code, a.referrer_id,
  (SELECT coalesce(sum(e.amount_micro_usd), 0) FROM ledger_entries e WHERE e.account = a.id)::text AS balance`;
const KEY_COLUMNS = "id, account_id, name, prefix, created_at, revoked_at, last_used_at";

interface AccountRow {
  id: string;
  name: string;
  created_at: Date;
  disabled: boolean;
  referral_code: string | null;
  referrer_id: string | null;
  balance: string;
}

interface KeyRow {
  id: string;
  account_id: string;
  name: string;
  prefix: string;
  created_at: Date;
  revoked_at: Date | null;
  last_used_at: Date | null;
}

/** Accounts, their API keys and administrative credits, in PostgreSQL. */
export class AccountStore {
  /** When this process last wrote each key's `last_used_at`. */
  private readonly lastTouched = new Map<string, number>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly options: { logger?: Logger } = {},
  ) {}

  /**
   * Creates an account, its first API key and, when asked, its initial credit and its referrer (the
   * owner of `referrerCode`), all in one transaction.
   */
  async createAccount(input: {
    name: string;
    initialCreditMicroUsd?: bigint;
    referrerCode?: string | undefined;
  }): Promise<{ account: Account; apiKey: ApiKeyRecord; secret: string }> {
    const name = validName("name", input.name, true);
    const credit = input.initialCreditMicroUsd ?? 0n;
    validAmount("initial_credit_micro_usd", credit, 0n);
    let referrerCode: string | undefined;
    if (input.referrerCode) {
      referrerCode = normaliseCode(input.referrerCode);
      if (referrerCode === undefined) {
        throw new InvalidArgumentError(
          "referrer_code",
          "referrer_code must be a referral code of letters and digits",
        );
      }
    }
    const accountId = generateId("acct_");
    return withTransaction(this.pool, async (client) => {
      let referrerId: string | null = null;
      if (referrerCode !== undefined) {
        const referrer = await client.query<{ id: string }>(
          "SELECT id FROM accounts WHERE referral_code = $1 AND NOT disabled",
          [referrerCode],
        );
        referrerId = referrer.rows[0]?.id ?? null;
        if (referrerId === null) throw new ReferralCodeNotFoundError();
      }
      const { rows } = await client.query<AccountRow>(
        `INSERT INTO accounts AS a (id, name, referrer_id) VALUES ($1, $2, $3) RETURNING ${ACCOUNT_COLUMNS}`,
        [accountId, name, referrerId],
      );
      const issued = await insertApiKey(client, accountId, "default");
      if (credit > 0n) {
        await postLedgerTransaction(
          client,
          creditPosting(accountId, credit, `account:${accountId}`, "initial credit"),
        );
      }
      const account = toAccount(rows[0]!);
      return {
        account: { ...account, balanceMicroUsd: credit },
        apiKey: issued.apiKey,
        secret: issued.secret,
      };
    });
  }

  async getAccount(accountId: string): Promise<Account> {
    const { rows } = await this.pool.query<AccountRow>(
      `SELECT ${ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = $1`,
      [accountId],
    );
    const row = rows[0];
    if (row === undefined) throw new AccountNotFoundError(accountId);
    return toAccount(row);
  }

  /** Pages through accounts, newest first (keyset pagination: stable while accounts are added). */
  async listAccounts(input: { pageSize?: number; pageToken?: string } = {}): Promise<AccountPage> {
    if (input.pageSize !== undefined && !(Number.isInteger(input.pageSize) && input.pageSize >= 0)) {
      throw new InvalidArgumentError("page_size", "page_size must be a whole number");
    }
    const pageSize = Math.min(input.pageSize || DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    const cursor = input.pageToken ? decodePageToken(input.pageToken) : undefined;
    const { rows } = await this.pool.query<AccountRow & { cursor_micros: string }>(
      `SELECT ${ACCOUNT_COLUMNS}, (extract(epoch FROM a.created_at) * 1000000)::bigint::text AS cursor_micros
         FROM accounts a
        WHERE $1::bigint IS NULL
           OR (a.created_at, a.id) < (timestamptz 'epoch' + $1::bigint * interval '1 microsecond', $2::text)
        ORDER BY a.created_at DESC, a.id DESC
        LIMIT $3`,
      [cursor?.micros ?? null, cursor?.id ?? null, pageSize + 1],
    );
    const page = rows.slice(0, pageSize);
    const last = page.at(-1);
    return {
      accounts: page.map(toAccount),
      nextPageToken: rows.length > pageSize && last ? encodePageToken(last.cursor_micros, last.id) : "",
    };
  }

  /** Enables or disables an account; a disabled account's keys stop authenticating at once. */
  async setAccountDisabled(accountId: string, disabled: boolean): Promise<Account> {
    const { rows } = await this.pool.query<AccountRow>(
      `UPDATE accounts a SET disabled = $2 WHERE a.id = $1 RETURNING ${ACCOUNT_COLUMNS}`,
      [accountId, disabled],
    );
    const row = rows[0];
    if (row === undefined) throw new AccountNotFoundError(accountId);
    return toAccount(row);
  }

  /** Issues a new key for the account; the secret is returned this once. */
  async createApiKey(accountId: string, name = ""): Promise<IssuedApiKey> {
    const keyName = validName("name", name, false);
    return withTransaction(this.pool, async (client) => {
      const { rowCount } = await client.query("SELECT 1 FROM accounts WHERE id = $1 FOR SHARE", [accountId]);
      if (rowCount === 0) throw new AccountNotFoundError(accountId);
      return insertApiKey(client, accountId, keyName);
    });
  }

  /** The account's keys, newest first. */
  async listApiKeys(accountId: string): Promise<ApiKeyRecord[]> {
    const { rows } = await this.pool.query<KeyRow>(
      `SELECT ${KEY_COLUMNS} FROM api_keys WHERE account_id = $1 ORDER BY created_at DESC, id DESC`,
      [accountId],
    );
    if (rows.length === 0) await this.getAccount(accountId); // throws AccountNotFoundError
    return rows.map(toApiKey);
  }

  /**
   * Revokes a key (revoking it again changes nothing) and returns it. With `accountId`, only a key
   * of that account: another account's is not found, as if it did not exist.
   */
  async revokeApiKey(keyId: string, accountId?: string): Promise<ApiKeyRecord> {
    const { rows } = await this.pool.query<KeyRow>(
      `UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
       WHERE id = $1 AND ($2::text IS NULL OR account_id = $2) RETURNING ${KEY_COLUMNS}`,
      [keyId, accountId ?? null],
    );
    const row = rows[0];
    if (row === undefined) throw new ApiKeyNotFoundError(keyId);
    return toApiKey(row);
  }

  /**
   * Adds non-withdrawable credit once per idempotency key: a repeated key (even concurrently) returns
   * `applied: false` and changes nothing; reusing a key for a different account or amount is an error.
   */
  async credit(input: {
    accountId: string;
    amountMicroUsd: bigint;
    idempotencyKey: string;
    note?: string;
  }): Promise<{ account: Account; applied: boolean }> {
    validAmount("amount_micro_usd", input.amountMicroUsd, 1n);
    const key = input.idempotencyKey.trim();
    if (key === "" || key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
      throw new InvalidArgumentError(
        "idempotency_key",
        `idempotency_key must be 1 to ${MAX_IDEMPOTENCY_KEY_LENGTH} characters`,
      );
    }
    const note = input.note ?? "";
    if (note.length > MAX_NOTE_LENGTH) {
      throw new InvalidArgumentError("note", `note must be at most ${MAX_NOTE_LENGTH} characters`);
    }
    const ledgerKey = `credit:${key}`;
    const applied = await withTransaction(this.pool, async (client) => {
      const { rowCount } = await client.query("SELECT 1 FROM accounts WHERE id = $1", [input.accountId]);
      if (rowCount === 0) throw new AccountNotFoundError(input.accountId);
      const posting = creditPosting(input.accountId, input.amountMicroUsd, ledgerKey, note);
      if ((await postLedgerTransaction(client, posting)) !== undefined) return true;
      const previous = await ledgerEntriesFor(client, ledgerKey);
      const same = previous?.entries.some(
        (entry) => entry.account === input.accountId && entry.amountMicroUsd === input.amountMicroUsd,
      );
      if (!same) throw new IdempotencyKeyReusedError(key);
      return false;
    });
    return { account: await this.getAccount(input.accountId), applied };
  }

  /**
   * Resolves an API key secret to its account with one indexed query; null for an unknown or revoked
   * key or a disabled account. Records use in `last_used_at`, at most once a minute per key.
   */
  async authenticateApiKey(secret: string): Promise<AuthenticatedKey | null> {
    if (!looksLikeApiKey(secret)) return null;
    const { rows } = await this.pool.query<{ id: string; account_id: string; last_used_at: Date | null }>(
      `SELECT k.id, k.account_id, k.last_used_at
         FROM api_keys k JOIN accounts a ON a.id = k.account_id
        WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND NOT a.disabled`,
      [hashApiKey(secret)],
    );
    const row = rows[0];
    if (row === undefined) return null;
    await this.touch(row.id, row.last_used_at);
    return { accountId: row.account_id, keyId: row.id };
  }

  private async touch(keyId: string, lastUsedAt: Date | null): Promise<void> {
    const now = Date.now();
    const last = Math.max(this.lastTouched.get(keyId) ?? 0, lastUsedAt?.getTime() ?? 0);
    if (now - last < LAST_USED_RESOLUTION_MS) return;
    this.lastTouched.set(keyId, now);
    try {
      await this.pool.query(
        `UPDATE api_keys SET last_used_at = now()
          WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`,
        [keyId],
      );
    } catch (error) {
      // Bookkeeping only: a failed write must not fail the request.
      this.options.logger?.warn({ keyId, err: (error as Error).message }, "could not record API key use");
    }
  }
}

async function insertApiKey(client: pg.ClientBase, accountId: string, name: string): Promise<IssuedApiKey> {
  const secret = generateApiKey();
  const { rows } = await client.query<KeyRow>(
    `INSERT INTO api_keys (id, account_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4, $5)
     RETURNING ${KEY_COLUMNS}`,
    [generateId("key_"), accountId, name, displayPrefix(secret), hashApiKey(secret)],
  );
  return { apiKey: toApiKey(rows[0]!), secret };
}

function creditPosting(accountId: string, amount: bigint, idempotencyKey: string, note: string) {
  return {
    kind: "credit",
    idempotencyKey,
    note,
    entries: [
      { account: accountId, amountMicroUsd: amount, bucket: "credited" as const },
      { account: PROMOTIONS_ACCOUNT, amountMicroUsd: -amount, bucket: "credited" as const },
    ],
  };
}

function validName(field: string, value: string, required: boolean): string {
  const name = value.trim();
  if (required && name === "") throw new InvalidArgumentError(field, `${field} is required`);
  if (name.length > MAX_NAME_LENGTH) {
    throw new InvalidArgumentError(field, `${field} must be at most ${MAX_NAME_LENGTH} characters`);
  }
  return name;
}

function validAmount(field: string, value: bigint, minimum: bigint): void {
  if (typeof value !== "bigint" || value < minimum || value > MAX_INT64) {
    throw new InvalidArgumentError(
      field,
      `${field} must be an integer from ${minimum} to ${MAX_INT64} micro-USD`,
    );
  }
}

function encodePageToken(micros: string, id: string): string {
  return Buffer.from(`${micros}.${id}`, "utf8").toString("base64url");
}

function decodePageToken(token: string): { micros: string; id: string } {
  const match = /^(\d{1,18})\.(acct_[A-Za-z0-9]+)$/.exec(Buffer.from(token, "base64url").toString("utf8"));
  if (!match) throw new InvalidArgumentError("page_token", "page_token is malformed");
  return { micros: match[1]!, id: match[2]! };
}

function toAccount(row: AccountRow): Account {
  return {
    id: row.id,
    name: row.name,
    createdAt: row.created_at,
    disabled: row.disabled,
    balanceMicroUsd: BigInt(row.balance),
    referralCode: row.referral_code,
    referrerId: row.referrer_id,
  };
}

function toApiKey(row: KeyRow): ApiKeyRecord {
  return {
    id: row.id,
    accountId: row.account_id,
    name: row.name,
    prefix: row.prefix,
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
    lastUsedAt: row.last_used_at,
  };
}
