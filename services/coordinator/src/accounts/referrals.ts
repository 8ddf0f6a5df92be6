import type pg from "pg";
import { invalidRequest, resourceNotFound } from "../errors/index.js";
import { withTransaction } from "../store/transaction.js";
import { CODE_ALPHABET, normaliseCode, REFERRAL_CODE_LENGTH, randomCode } from "./codes.js";
import { AccountNotFoundError } from "./errors.js";

const MAX_ATTEMPTS = 8;
const UNIQUE_VIOLATION = "23505";

/**
 * Referral codes: every account has one (made the first time it is asked for); another account may
 * name it once to make its owner its referrer, who is then paid a share of the platform fee on the
 * referred account's requests (billing_settle). No self-referral, no two accounts referring each other.
 */
export class ReferralStore {
  constructor(private readonly pool: pg.Pool) {}

  /** The account's referral code, generated and stored on first use. */
  async codeFor(accountId: string): Promise<string> {
    for (let attempt = 1; ; attempt++) {
      try {
        const { rows } = await this.pool.query<{ referral_code: string }>(
          `UPDATE accounts SET referral_code = coalesce(referral_code, $2) WHERE id = $1 RETURNING referral_code`,
          [accountId, randomCode(CODE_ALPHABET, REFERRAL_CODE_LENGTH)],
        );
        const row = rows[0];
        if (row === undefined) throw new AccountNotFoundError(accountId);
        return row.referral_code;
      } catch (e) {
        // Another account holds the code drawn: draw again.
        if ((e as { code?: string }).code !== UNIQUE_VIOLATION || attempt >= MAX_ATTEMPTS) throw e;
      }
    }
  }

  /**
   * Makes the owner of `typed` the account's referrer. Applying the code already applied changes
   * nothing (`applied: false`); any other change of referrer is refused. Throws the consumer API's errors.
   */
  async apply(accountId: string, typed: string): Promise<{ referralCode: string; applied: boolean }> {
    const code = normaliseCode(typed);
    if (code === undefined) {
      throw invalidRequest(
        "code must be a referral code of letters and digits, such as K7QM2XTB.",
        "code",
        "invalid_referral_code",
      );
    }
    return withTransaction(this.pool, async (client) => {
      const referrer = await client.query<{ id: string }>(
        "SELECT id FROM accounts WHERE referral_code = $1 AND NOT disabled",
        [code],
      );
      const ownerId = referrer.rows[0]?.id;
      if (ownerId === undefined) {
        throw resourceNotFound(
          "No account has this referral code. Check the code and try again.",
          "referral_code_not_found",
          "code",
        );
      }
      if (ownerId === accountId) {
        throw invalidRequest("An account cannot refer itself.", "code", "self_referral");
      }
      // Both rows locked, in id order: two accounts applying each other's code at once cannot both win.
      const { rows } = await client.query<{ id: string; referrer_id: string | null }>(
        "SELECT id, referrer_id FROM accounts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
        [[accountId, ownerId]],
      );
      const owner = rows.find((r) => r.id === ownerId);
      const current = rows.find((r) => r.id === accountId);
      if (current === undefined) throw new AccountNotFoundError(accountId);
      if (current.referrer_id === ownerId) return { referralCode: code, applied: false };
      if (current.referrer_id !== null) {
        throw invalidRequest(
          "This account already has a referrer; it can be set only once.",
          "code",
          "referrer_already_set",
        );
      }
      if (owner?.referrer_id === accountId) {
        throw invalidRequest(
          "This code's account was referred by yours; two accounts cannot refer each other.",
          "code",
          "referral_cycle",
        );
      }
      await client.query("UPDATE accounts SET referrer_id = $2 WHERE id = $1", [accountId, ownerId]);
      return { referralCode: code, applied: true };
    });
  }
}
