import type pg from "pg";

/** One thing `ledger verify` found wrong. */
export interface LedgerDiscrepancy {
  /** Stable code: unbalanced_ledger, unbalanced_transaction, balance_mismatch, negative_balance, stale_reservation, reservations_mismatch. */
  check: string;
  detail: string;
}

export interface LedgerReport {
  ok: boolean;
  transactions: number;
  entries: number;
  accounts: number;
  openReservations: number;
  discrepancies: LedgerDiscrepancy[];
}

const LIMIT = 100;

/**
 * Proves the ledger's invariants: all entries sum to zero, every transaction balances, every
 * materialised balance equals the sum of its entries, no user balance is negative, no reservation is
 * open past its lease (its owner renews it while the request is in flight), and the reservations
 * account holds exactly the open reservations. (System accounts "platform:…" have no materialised
 * balance: theirs is the sum of their entries.)
 */
export async function verifyLedger(pool: pg.Pool): Promise<LedgerReport> {
  const client = await pool.connect();
  try {
    // One snapshot for every check, so concurrent traffic cannot produce a false discrepancy.
    await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    const discrepancies: LedgerDiscrepancy[] = [];
    const add = (
      check: string,
      rows: Array<Record<string, unknown>>,
      describe: (r: Record<string, unknown>) => string,
    ) => {
      for (const r of rows) discrepancies.push({ check, detail: describe(r) });
    };

    const totals = await client.query<{
      sum: string;
      entries: string;
      transactions: string;
      accounts: string;
    }>(
      `SELECT coalesce(sum(amount_micro_usd), 0)::text AS sum, count(*)::text AS entries,
              (SELECT count(*) FROM ledger_transactions)::text AS transactions,
              count(DISTINCT account)::text AS accounts
         FROM ledger_entries`,
    );
    const t = totals.rows[0];
    if (t && t.sum !== "0")
      discrepancies.push({ check: "unbalanced_ledger", detail: `all entries sum to ${t.sum}, not 0` });

    add(
      "unbalanced_transaction",
      (
        await client.query(
          `SELECT transaction_id, sum(amount_micro_usd)::text AS s FROM ledger_entries
            GROUP BY transaction_id HAVING sum(amount_micro_usd) <> 0 LIMIT ${LIMIT}`,
        )
      ).rows,
      (r) => `transaction ${r.transaction_id} sums to ${r.s}`,
    );
    add(
      "balance_mismatch",
      (
        await client.query(
          `SELECT coalesce(b.account, e.account) AS account, coalesce(b.bucket, e.bucket) AS bucket,
                  coalesce(b.amount_micro_usd, 0)::text AS balance, coalesce(e.s, 0)::text AS entries
             FROM balances b
             FULL JOIN (SELECT account, bucket, sum(amount_micro_usd) AS s FROM ledger_entries
                         WHERE account NOT LIKE 'platform:%' GROUP BY account, bucket) e
               ON e.account = b.account AND e.bucket = b.bucket
            WHERE coalesce(b.amount_micro_usd, 0) <> coalesce(e.s, 0) LIMIT ${LIMIT}`,
        )
      ).rows,
      (r) => `${r.account} (${r.bucket}) balance ${r.balance} but its entries sum to ${r.entries}`,
    );
    add(
      "negative_balance",
      (
        await client.query(
          `SELECT account, sum(amount_micro_usd)::text AS s FROM ledger_entries
            WHERE account LIKE 'acct\\_%' GROUP BY account HAVING sum(amount_micro_usd) < 0 LIMIT ${LIMIT}`,
        )
      ).rows,
      (r) => `${r.account} is at ${r.s}`,
    );
    add(
      "stale_reservation",
      (
        await client.query(
          `SELECT request_id, account_id, amount_micro_usd::text AS a, expires_at FROM reservations
            WHERE state = 'open' AND expires_at < now() LIMIT ${LIMIT}`,
        )
      ).rows,
      (r) =>
        `reservation ${r.request_id} of ${r.account_id} (${r.a}) open past its lease (${(r.expires_at as Date).toISOString()}): recovery has not run`,
    );
    const held = await client.query<{ open: string; held: string; n: string }>(
      `SELECT (SELECT coalesce(sum(amount_micro_usd), 0) FROM reservations WHERE state = 'open')::text AS open,
              (SELECT coalesce(sum(amount_micro_usd), 0) FROM ledger_entries WHERE account = 'platform:reservations')::text AS held,
              (SELECT count(*) FROM reservations WHERE state = 'open')::text AS n`,
    );
    const h = held.rows[0];
    if (h && h.open !== h.held) {
      discrepancies.push({
        check: "reservations_mismatch",
        detail: `open reservations total ${h.open} but platform:reservations holds ${h.held}`,
      });
    }
    await client.query("COMMIT");
    return {
      ok: discrepancies.length === 0,
      transactions: Number(t?.transactions ?? 0),
      entries: Number(t?.entries ?? 0),
      accounts: Number(t?.accounts ?? 0),
      openReservations: Number(h?.n ?? 0),
      discrepancies,
    };
  } catch (e) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw e;
  } finally {
    client.release();
  }
}
