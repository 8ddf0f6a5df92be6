import type pg from "pg";
import { InvalidArgumentError } from "../store/errors.js";
import { AccountNotFoundError } from "./errors.js";

/** An account's money, from the materialised balances and its open reservations. */
export interface MoneySummary {
  name: string;
  /**
   * Spendable, non-withdrawable money: granted (invites, administrative and initial credit) and
   * referral rewards on requests paid with such money.
   */
  creditedMicroUsd: bigint;
  /**
   * Withdrawable money: provider earnings from unrelated accounts, and referral rewards on requests
   * paid with earned money.
   */
  earnedMicroUsd: bigint;
  /** Held by the account's open reservations (already taken out of the two above). */
  heldMicroUsd: bigint;
}

/** One request billed to an account. */
export interface UsageRecord {
  requestId: string;
  model: string;
  state: "open" | "settled";
  /** completed, failed, cancelled, cut or recovered; null while open. */
  outcome: string | null;
  reservedMicroUsd: bigint;
  /** null while open. */
  chargedMicroUsd: bigint | null;
  promptTokens: number | null;
  completionTokens: number | null;
  providerAccount: string | null;
  createdAt: Date;
  settledAt: Date | null;
  /** Its X-Timing phases in microseconds when it was settled (request_timings); null: not (yet) recorded. */
  timing: Record<string, number> | null;
}

/** One request an account served as a provider. */
export interface EarningRecord {
  requestId: string;
  model: string;
  promptTokens: number;
  completionTokens: number;
  /** What the consumer was charged. */
  chargedMicroUsd: bigint;
  /** The provider's share of it, paid to this account. */
  earnedMicroUsd: bigint;
  /** The provider's share withheld (paid to the platform) because the consumer is this account or linked to it. */
  withheldMicroUsd: bigint;
  settledAt: Date;
}

export interface Earnings {
  /** Everything ever paid to the account for serving. */
  providerEarningsMicroUsd: bigint;
  /** Everything ever paid to the account as a referrer (as credit where credit paid the request). */
  referralEarningsMicroUsd: bigint;
  requestsServed: number;
  records: EarningRecord[];
  hasMore: boolean;
}

/** A page of records, newest first; `before` is the last record's request id of the previous page. */
export interface PageRequest {
  limit: number;
  before?: string | undefined;
  /** How the caller names the cursor, for errors (default "before"). */
  cursorField?: string;
}

interface UsageRow {
  request_id: string;
  model: string;
  state: "open" | "settled";
  outcome: string | null;
  amount: string;
  charged: string | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  provider_account: string | null;
  created_at: Date;
  settled_at: Date | null;
  phases: Record<string, number> | null;
}

/** Read-only views of the money an account has, spent and earned. */
export class UsageStore {
  constructor(private readonly pool: pg.Pool) {}

  async summary(accountId: string): Promise<MoneySummary> {
    const { rows } = await this.pool.query<{
      name: string | null;
      credited: string;
      earned: string;
      held: string;
    }>(
      `SELECT (SELECT name FROM accounts WHERE id = $1) AS name,
              coalesce((SELECT amount_micro_usd FROM balances WHERE account = $1 AND bucket = 'credited'), 0)::text AS credited,
              coalesce((SELECT amount_micro_usd FROM balances WHERE account = $1 AND bucket = 'earned'), 0)::text AS earned,
              (SELECT coalesce(sum(amount_micro_usd), 0) FROM reservations
                WHERE account_id = $1 AND state = 'open')::text AS held`,
      [accountId],
    );
    const row = rows[0]!;
    if (row.name === null) throw new AccountNotFoundError(accountId);
    return {
      name: row.name,
      creditedMicroUsd: BigInt(row.credited),
      earnedMicroUsd: BigInt(row.earned),
      heldMicroUsd: BigInt(row.held),
    };
  }

  /** The account's requests, newest first (keyset pages on creation time and request id). */
  async usage(accountId: string, page: PageRequest): Promise<{ records: UsageRecord[]; hasMore: boolean }> {
    if (page.before !== undefined) await this.requireCursor("account_id", accountId, page);
    const { rows } = await this.pool.query<UsageRow>(
      `SELECT r.request_id, r.model, r.state, r.outcome, r.amount_micro_usd::text AS amount,
              r.charged_micro_usd::text AS charged, r.prompt_tokens, r.completion_tokens,
              r.provider_account, r.created_at, r.settled_at, t.phases
         FROM reservations r
         LEFT JOIN request_timings t ON t.request_id = r.request_id
        WHERE r.account_id = $1
          AND ($2::text IS NULL OR (r.created_at, r.request_id) <
               (SELECT c.created_at, c.request_id FROM reservations c WHERE c.request_id = $2))
        ORDER BY r.created_at DESC, r.request_id DESC
        LIMIT $3`,
      [accountId, page.before ?? null, page.limit + 1],
    );
    return {
      records: rows.slice(0, page.limit).map((r) => ({
        requestId: r.request_id,
        model: r.model,
        state: r.state,
        outcome: r.outcome,
        reservedMicroUsd: BigInt(r.amount),
        chargedMicroUsd: r.charged === null ? null : BigInt(r.charged),
        promptTokens: r.prompt_tokens,
        completionTokens: r.completion_tokens,
        providerAccount: r.provider_account,
        createdAt: r.created_at,
        settledAt: r.settled_at,
        timing: r.phases,
      })),
      hasMore: rows.length > page.limit,
    };
  }

  /** What the account earned as a provider and as a referrer, and the requests it served, newest first. */
  async earnings(accountId: string, page: PageRequest): Promise<Earnings> {
    if (page.before !== undefined) await this.requireCursor("provider_account", accountId, page);
    const totals = await this.pool.query<{ provider: string; requests: string; referral: string }>(
      `SELECT (SELECT coalesce(sum(provider_paid_micro_usd), 0) FROM reservations
                WHERE provider_account = $1 AND state = 'settled')::text AS provider,
              (SELECT count(*) FROM reservations WHERE provider_account = $1 AND state = 'settled')::text AS requests,
              (SELECT coalesce(sum(referral_paid_micro_usd), 0) FROM reservations
                WHERE referrer_id = $1)::text AS referral`,
      [accountId],
    );
    const { rows } = await this.pool.query<{
      request_id: string;
      model: string;
      prompt_tokens: number;
      completion_tokens: number;
      charged: string;
      earned: string;
      withheld: string;
      settled_at: Date;
    }>(
      `SELECT r.request_id, r.model, coalesce(r.prompt_tokens, 0) AS prompt_tokens,
              coalesce(r.completion_tokens, 0) AS completion_tokens, r.charged_micro_usd::text AS charged,
              coalesce(r.provider_paid_micro_usd, 0)::text AS earned,
              coalesce(r.provider_withheld_micro_usd, 0)::text AS withheld, r.settled_at
         FROM reservations r
        WHERE r.provider_account = $1 AND r.state = 'settled'
          AND ($2::text IS NULL OR (r.settled_at, r.request_id) <
               (SELECT c.settled_at, c.request_id FROM reservations c WHERE c.request_id = $2))
        ORDER BY r.settled_at DESC, r.request_id DESC
        LIMIT $3`,
      [accountId, page.before ?? null, page.limit + 1],
    );
    const t = totals.rows[0]!;
    return {
      providerEarningsMicroUsd: BigInt(t.provider),
      referralEarningsMicroUsd: BigInt(t.referral),
      requestsServed: Number(t.requests),
      records: rows.slice(0, page.limit).map((r) => ({
        requestId: r.request_id,
        model: r.model,
        promptTokens: r.prompt_tokens,
        completionTokens: r.completion_tokens,
        chargedMicroUsd: BigInt(r.charged),
        earnedMicroUsd: BigInt(r.earned),
        withheldMicroUsd: BigInt(r.withheld),
        settledAt: r.settled_at,
      })),
      hasMore: rows.length > page.limit,
    };
  }

  /** A cursor must be one of the account's own records (so pages cannot probe other accounts). */
  private async requireCursor(
    column: "account_id" | "provider_account",
    accountId: string,
    page: PageRequest,
  ): Promise<void> {
    const extra = column === "provider_account" ? " AND state = 'settled'" : "";
    const { rowCount } = await this.pool.query(
      `SELECT 1 FROM reservations WHERE request_id = $1 AND ${column} = $2${extra}`,
      [page.before, accountId],
    );
    if (rowCount === 0) {
      const field = page.cursorField ?? "before";
      throw new InvalidArgumentError(field, `${field} must be the request_id of a record of a previous page`);
    }
  }
}
