import type pg from "pg";

/**
 * Money in an account is either credited (granted: never withdrawable) or earned (paid for serving an
 * unrelated account: withdrawable). No movement turns credited money into earned money of the account
 * that held it or of an account linked to it (docs/ARCHITECTURE.md, "Money rules").
 */
export type LedgerBucket = "credited" | "earned";

export interface LedgerEntry {
  /** "acct_…" for a user's account, or a system account such as "platform:promotions". */
  account: string;
  /** Signed: positive adds to the account, negative takes from it. Never zero. */
  amountMicroUsd: bigint;
  bucket: LedgerBucket;
}

export interface LedgerPosting {
  kind: string;
  /** Makes the posting happen at most once: a second posting with the same key is not applied. */
  idempotencyKey: string;
  note?: string;
  /** At least two entries that sum to zero. */
  entries: readonly LedgerEntry[];
}

/** System account that funds administrative credits and promotions. */
export const PROMOTIONS_ACCOUNT = "platform:promotions";

/**
 * Posts a balanced transaction on `client` (inside the caller's transaction) and returns its id, or
 * undefined when a transaction with the same idempotency key exists already (then nothing changes).
 * Concurrent postings with one key serialise on its unique index: exactly one is applied.
 */
export async function postLedgerTransaction(
  client: pg.ClientBase,
  posting: LedgerPosting,
): Promise<bigint | undefined> {
  assertBalanced(posting.entries);
  const inserted = await client.query<{ id: string }>(
    `INSERT INTO ledger_transactions (kind, idempotency_key, note) VALUES ($1, $2, $3)
     ON CONFLICT (idempotency_key) DO NOTHING RETURNING id`,
    [posting.kind, posting.idempotencyKey, posting.note ?? ""],
  );
  const id = inserted.rows[0]?.id;
  if (id === undefined) return undefined;
  await client.query(
    `INSERT INTO ledger_entries (transaction_id, account, amount_micro_usd, bucket)
     SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::text[])`,
    [
      id,
      posting.entries.map((entry) => entry.account),
      posting.entries.map((entry) => entry.amountMicroUsd.toString()),
      posting.entries.map((entry) => entry.bucket),
    ],
  );
  return BigInt(id);
}

/** The transaction posted under `idempotencyKey`, or undefined when there is none. */
export async function ledgerEntriesFor(
  client: pg.ClientBase | pg.Pool,
  idempotencyKey: string,
): Promise<{ kind: string; entries: LedgerEntry[] } | undefined> {
  const { rows } = await client.query<{
    kind: string;
    account: string;
    amount: string;
    bucket: LedgerBucket;
  }>(
    `SELECT t.kind, e.account, e.amount_micro_usd::text AS amount, e.bucket
       FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id
      WHERE t.idempotency_key = $1 ORDER BY e.id`,
    [idempotencyKey],
  );
  const first = rows[0];
  if (first === undefined) return undefined;
  return {
    kind: first.kind,
    entries: rows.map((row) => ({
      account: row.account,
      amountMicroUsd: BigInt(row.amount),
      bucket: row.bucket,
    })),
  };
}

/** An account's balance: the sum of all its entries, in micro-USD. */
export async function ledgerBalance(client: pg.ClientBase | pg.Pool, account: string): Promise<bigint> {
  const { rows } = await client.query<{ balance: string }>(
    "SELECT coalesce(sum(amount_micro_usd), 0)::text AS balance FROM ledger_entries WHERE account = $1",
    [account],
  );
  return BigInt(rows[0]?.balance ?? "0");
}

function assertBalanced(entries: readonly LedgerEntry[]): void {
  if (entries.length < 2) throw new Error("a ledger transaction needs at least two entries");
  if (entries.some((entry) => entry.amountMicroUsd === 0n)) throw new Error("a ledger entry cannot be zero");
  const sum = entries.reduce((total, entry) => total + entry.amountMicroUsd, 0n);
  if (sum !== 0n) throw new Error(`ledger entries must sum to zero, not ${sum}`);
}
