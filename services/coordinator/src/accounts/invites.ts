import type pg from "pg";
import { invalidRequest, resourceNotFound } from "../errors/index.js";
import { AlreadyExistsError, InvalidArgumentError, NotFoundError } from "../store/errors.js";
import { PROMOTIONS_ACCOUNT, postLedgerTransaction } from "../store/ledger.js";
import { cursorMicros, cursorTimestamp, decodePageToken, encodePageToken } from "../store/page-token.js";
import { withTransaction } from "../store/transaction.js";
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from "./account-store.js";
import { generateId } from "./api-key.js";
import { CODE_ALPHABET, groupCode, INVITE_CODE_LENGTH, normaliseCode, randomCode, sha256 } from "./codes.js";

/** An invite code's settings and use; never the code itself. */
export interface Invite {
  id: string;
  /** The code's first characters, for recognising it. */
  prefix: string;
  creditMicroUsd: bigint;
  maxUses: number;
  uses: number;
  expiresAt: Date | null;
  revokedAt: Date | null;
  createdAt: Date;
  note: string;
}

export interface InvitePage {
  invites: Invite[];
  nextPageToken: string;
}

export interface Redemption {
  inviteId: string;
  creditedMicroUsd: bigint;
  /** Spendable balance after the credit. */
  balanceMicroUsd: bigint;
}

/** The invite does not exist. */
export class InviteNotFoundError extends NotFoundError {
  override readonly name = "InviteNotFoundError";

  constructor(readonly inviteId: string) {
    super(`invite ${inviteId} does not exist`);
  }
}

const MAX_INT64 = 2n ** 63n - 1n;
const MAX_USES = 1_000_000_000;
const MAX_NOTE_LENGTH = 1000;
const PREFIX_LENGTH = 4;
const UNIQUE_VIOLATION = "23505";
const COLUMNS =
  "id, prefix, credit_micro_usd::text AS credit, max_uses, uses, expires_at, revoked_at, created_at, note";

interface InviteRow {
  id: string;
  prefix: string;
  credit: string;
  max_uses: number;
  uses: number;
  expires_at: Date | null;
  revoked_at: Date | null;
  created_at: Date;
  note: string;
}

/**
 * Invite codes: an administrator creates one with a credit, a number of uses and an expiry; each
 * account may redeem a code once, for its credit, until it is used up, expires or is revoked. Codes
 * are stored only as SHA-256 hashes.
 */
export class InviteStore {
  constructor(private readonly pool: pg.Pool) {}

  /** Creates an invite; `code` chooses the code, else one is generated. The code is returned this once. */
  async create(input: {
    creditMicroUsd: bigint;
    maxUses: number;
    expiresAt?: Date | undefined;
    code?: string | undefined;
    note?: string | undefined;
  }): Promise<{ invite: Invite; code: string }> {
    if (input.creditMicroUsd < 1n || input.creditMicroUsd > MAX_INT64) {
      throw new InvalidArgumentError(
        "credit_micro_usd",
        `credit_micro_usd must be an integer from 1 to ${MAX_INT64} micro-USD`,
      );
    }
    if (!Number.isInteger(input.maxUses) || input.maxUses < 1 || input.maxUses > MAX_USES) {
      throw new InvalidArgumentError("max_uses", `max_uses must be a whole number from 1 to ${MAX_USES}`);
    }
    if (input.expiresAt !== undefined && input.expiresAt.getTime() <= Date.now()) {
      throw new InvalidArgumentError("expires_at", "expires_at must be in the future");
    }
    const note = input.note ?? "";
    if (note.length > MAX_NOTE_LENGTH) {
      throw new InvalidArgumentError("note", `note must be at most ${MAX_NOTE_LENGTH} characters`);
    }
    let code: string;
    if (input.code) {
      const chosen = normaliseCode(input.code);
      if (chosen === undefined) {
        throw new InvalidArgumentError(
          "code",
          "code must be 4 to 64 letters or digits (dashes and spaces are ignored, case does not matter)",
        );
      }
      code = chosen;
    } else {
      code = randomCode(CODE_ALPHABET, INVITE_CODE_LENGTH);
    }
    try {
      const { rows } = await this.pool.query<InviteRow>(
        `INSERT INTO invites (id, code_hash, prefix, credit_micro_usd, max_uses, expires_at, note)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ${COLUMNS}`,
        [
          generateId("inv_"),
          sha256(code),
          code.slice(0, PREFIX_LENGTH),
          input.creditMicroUsd.toString(),
          input.maxUses,
          input.expiresAt ?? null,
          note,
        ],
      );
      return { invite: toInvite(rows[0]!), code: groupCode(code) };
    } catch (e) {
      if ((e as { code?: string }).code === UNIQUE_VIOLATION) {
        throw new AlreadyExistsError("an invite with this code exists already");
      }
      throw e;
    }
  }

  /** Pages through invites, newest first. */
  async list(input: { pageSize?: number; pageToken?: string } = {}): Promise<InvitePage> {
    const pageSize = Math.min(input.pageSize || DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    const cursor = input.pageToken ? decodePageToken(input.pageToken, /inv_[A-Za-z0-9]+/) : undefined;
    const { rows } = await this.pool.query<InviteRow & { cursor_micros: string }>(
      `SELECT ${COLUMNS}, ${cursorMicros("created_at")} AS cursor_micros FROM invites
        WHERE $1::bigint IS NULL OR (created_at, id) < (${cursorTimestamp("$1")}, $2::text)
        ORDER BY created_at DESC, id DESC LIMIT $3`,
      [cursor?.micros ?? null, cursor?.id ?? null, pageSize + 1],
    );
    const page = rows.slice(0, pageSize);
    const last = page.at(-1);
    return {
      invites: page.map(toInvite),
      nextPageToken: rows.length > pageSize && last ? encodePageToken(last.cursor_micros, last.id) : "",
    };
  }

  /** Revokes an invite (revoking it again changes nothing); redemptions made stand. */
  async revoke(inviteId: string): Promise<Invite> {
    const { rows } = await this.pool.query<InviteRow>(
      `UPDATE invites SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING ${COLUMNS}`,
      [inviteId],
    );
    const row = rows[0];
    if (row === undefined) throw new InviteNotFoundError(inviteId);
    return toInvite(row);
  }

  /**
   * Credits the account with the invite's credit, once per (invite, account). The invite's row lock
   * serialises concurrent redemptions, so its uses never pass max_uses; the ledger posting is keyed
   * by invite and account, so no interleaving can credit twice. Throws the consumer API's errors.
   */
  async redeem(accountId: string, typed: string): Promise<Redemption> {
    const code = normaliseCode(typed);
    if (code === undefined) {
      throw invalidRequest(
        "code must be an invite code of 4 to 64 letters or digits, such as ABCD-EFGH-JKLM-NPQR.",
        "code",
        "invalid_invite_code",
      );
    }
    return withTransaction(this.pool, async (client) => {
      const { rows } = await client.query<InviteRow & { expired: boolean }>(
        `SELECT ${COLUMNS}, coalesce(expires_at <= now(), false) AS expired
           FROM invites WHERE code_hash = $1 FOR UPDATE`,
        [sha256(code)],
      );
      const invite = rows[0];
      if (invite === undefined) {
        throw resourceNotFound(
          "No invite has this code. Check the code and try again.",
          "invite_not_found",
          "code",
        );
      }
      const redeemed = await client.query(
        "SELECT 1 FROM invite_redemptions WHERE invite_id = $1 AND account_id = $2",
        [invite.id, accountId],
      );
      if ((redeemed.rowCount ?? 0) > 0) {
        throw invalidRequest(
          "This account has redeemed this invite code already; each account can redeem a code once.",
          "code",
          "invite_already_redeemed",
        );
      }
      if (invite.revoked_at !== null) {
        throw invalidRequest("This invite code has been revoked.", "code", "invite_revoked");
      }
      if (invite.expired) {
        throw invalidRequest(
          `This invite code expired at ${invite.expires_at?.toISOString()}.`,
          "code",
          "invite_expired",
        );
      }
      if (invite.uses >= invite.max_uses) {
        throw invalidRequest(
          `This invite code has been used the ${invite.max_uses} times it allows.`,
          "code",
          "invite_exhausted",
        );
      }
      await client.query("INSERT INTO invite_redemptions (invite_id, account_id) VALUES ($1, $2)", [
        invite.id,
        accountId,
      ]);
      await client.query("UPDATE invites SET uses = uses + 1 WHERE id = $1", [invite.id]);
      const credit = BigInt(invite.credit);
      const posted = await postLedgerTransaction(client, {
        kind: "invite",
        idempotencyKey: `invite:${invite.id}:${accountId}`,
        note: `invite ${invite.id}`,
        entries: [
          { account: accountId, amountMicroUsd: credit, bucket: "credited" },
          { account: PROMOTIONS_ACCOUNT, amountMicroUsd: -credit, bucket: "credited" },
        ],
      });
      // The redemption row makes a second posting impossible; a missing one means the ledger and
      // the redemptions disagree, so nothing is committed.
      if (posted === undefined) throw new Error(`invite ${invite.id} was credited to ${accountId} twice`);
      const balance = await client.query<{ b: string }>(
        "SELECT coalesce(sum(amount_micro_usd), 0)::text AS b FROM balances WHERE account = $1",
        [accountId],
      );
      return {
        inviteId: invite.id,
        creditedMicroUsd: credit,
        balanceMicroUsd: BigInt(balance.rows[0]?.b ?? "0"),
      };
    });
  }
}

function toInvite(row: InviteRow): Invite {
  return {
    id: row.id,
    prefix: row.prefix,
    creditMicroUsd: BigInt(row.credit),
    maxUses: row.max_uses,
    uses: row.uses,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    createdAt: row.created_at,
    note: row.note,
  };
}
