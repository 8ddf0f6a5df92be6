import type pg from "pg";

// What tests read of the ledger and the reservations, in one place: balances are sums of ledger
// entries (the only source of balances), and a request's reservation row says how it was settled.

/** A request's row in the reservations table, as tests compare it (amounts as decimal strings). */
export interface ReservationRow {
  state: "open" | "settled";
  held: string;
  charged: string | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  outcome: string | null;
}

/** An account's balance: the sum of its ledger entries, in one bucket or both. */
export async function ledgerBalance(
  pool: pg.Pool,
  account: string,
  bucket?: "credited" | "earned",
): Promise<bigint> {
  const { rows } = await pool.query<{ b: string }>(
    `SELECT coalesce(sum(amount_micro_usd), 0)::text AS b FROM ledger_entries
      WHERE account = $1 ${bucket ? "AND bucket = $2" : ""}`,
    bucket ? [account, bucket] : [account],
  );
  return BigInt(rows[0]?.b ?? "0");
}

/** Whether every ledger entry sums to zero (a double-entry ledger always does). */
export async function ledgerBalanced(pool: pg.Pool): Promise<boolean> {
  const { rows } = await pool.query<{ s: string }>(
    "SELECT coalesce(sum(amount_micro_usd), 0)::text AS s FROM ledger_entries",
  );
  return rows[0]?.s === "0";
}

/** A request's reservation, or undefined before it was made. */
export async function reservationRow(pool: pg.Pool, requestId: string): Promise<ReservationRow | undefined> {
  const { rows } = await pool.query<ReservationRow>(
    `SELECT state, amount_micro_usd::text AS held, charged_micro_usd::text AS charged,
            prompt_tokens, completion_tokens, outcome
       FROM reservations WHERE request_id = $1`,
    [requestId],
  );
  return rows[0];
}

/**
 * A request's reservation once settled (settlement follows the end of the response, so a test that
 * read the response may be a moment early); rejects after `timeoutMs`.
 */
export async function settledReservation(
  pool: pg.Pool,
  requestId: string,
  timeoutMs = 10_000,
): Promise<ReservationRow> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const row = await reservationRow(pool, requestId);
    if (row?.state === "settled") return row;
    if (Date.now() > until) {
      throw new Error(
        `reservation ${requestId} not settled within ${timeoutMs} ms (${row?.state ?? "absent"})`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
