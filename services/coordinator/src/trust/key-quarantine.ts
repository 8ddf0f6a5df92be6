import type pg from "pg";
import { InvalidArgumentError, NotFoundError } from "../store/errors.js";
import { withTransaction } from "../store/transaction.js";

/** A signing key's quarantine as stored: the finding and until when it holds. */
export interface KeyQuarantine {
  /** SEC1 uncompressed P-256 point, lowercase hex (130 digits). */
  keyHex: string;
  code: string;
  message: string;
  until: Date;
  /** When this quarantine began. */
  createdAt: Date;
  /**
   * How long it still holds, measured by the database's clock when it was read (what a replica
   * whose clock differs should count from, rather than `until`).
   */
  remainingMs: number;
}

/** One administrator's early lift of a quarantine, as audited. */
export interface QuarantineLift {
  id: string;
  keyHex: string;
  /** The quarantine lifted, as it stood. */
  code: string;
  message: string;
  until: Date;
  reason: string;
  actor: string;
  liftedAt: Date;
}

const MAX_CODE = 64;
const MAX_MESSAGE = 1000;
const MAX_REASON = 1000;
const MAX_ACTOR = 256;
const HEX_P256 = /^04[0-9a-f]{128}$/;

interface QuarantineRow {
  signing_key: string;
  code: string;
  message: string;
  until: Date;
  created_at: Date;
  remaining_ms: number;
}

interface LiftRow {
  id: string;
  signing_key: string;
  code: string;
  message: string;
  until: Date;
  reason: string;
  actor: string;
  lifted_at: Date;
}

const QUARANTINE_COLUMNS =
  "signing_key, code, message, until, created_at, " +
  "(extract(epoch FROM until - now()) * 1000)::float8 AS remaining_ms";
const LIFT_COLUMNS = "id::text AS id, signing_key, code, message, until, reason, actor, lifted_at";

/**
 * The key_quarantine table (migration 0009): signing keys caught misbehaving on the data path after
 * proving themselves, untrusted until a time, on every coordinator sharing the database and across
 * restarts. Rows past their time are ignored by every read and deleted by the next write.
 */
export class KeyQuarantineStore {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * Quarantines `keyHex` for `durationMs` from now (the database's now), or extends its quarantine to
   * then when it holds longer already not; the finding's code and message replace the stored ones.
   * Deletes expired rows on the way. Returns the quarantine as stored.
   */
  async put(keyHex: string, code: string, message: string, durationMs: number): Promise<KeyQuarantine> {
    const key = checkKey(keyHex);
    if (!Number.isFinite(durationMs) || durationMs <= 0) {
      throw new InvalidArgumentError(
        "duration",
        `a quarantine must last a positive time, got ${durationMs} ms`,
      );
    }
    const { rows } = await this.pool.query<QuarantineRow>(
      `INSERT INTO key_quarantine AS q (signing_key, code, message, until)
       VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond')
       ON CONFLICT (signing_key) DO UPDATE SET
         code = EXCLUDED.code,
         message = EXCLUDED.message,
         until = GREATEST(q.until, EXCLUDED.until),
         created_at = CASE WHEN q.until <= now() THEN now() ELSE q.created_at END
       RETURNING ${QUARANTINE_COLUMNS}`,
      [key, code.slice(0, MAX_CODE) || "untrusted", message.slice(0, MAX_MESSAGE), Math.ceil(durationMs)],
    );
    await this.prune();
    return quarantine(rows[0]!);
  }

  /** The quarantine of `keyHex` when one holds now; expired rows are ignored. */
  async get(keyHex: string): Promise<KeyQuarantine | undefined> {
    const { rows } = await this.pool.query<QuarantineRow>(
      `SELECT ${QUARANTINE_COLUMNS} FROM key_quarantine WHERE signing_key = $1 AND until > now()`,
      [keyHex],
    );
    return rows[0] ? quarantine(rows[0]) : undefined;
  }

  /** Deletes the quarantines that expired; returns how many. */
  async prune(): Promise<number> {
    const { rowCount } = await this.pool.query("DELETE FROM key_quarantine WHERE until <= now()");
    return rowCount ?? 0;
  }

  /**
   * Lifts the quarantine of `keyHex` before its time, and records who did it, when, why and what was
   * lifted in the same transaction. Throws InvalidArgumentError for a bad key, reason or actor, and
   * NotFoundError when no quarantine holds for the key.
   */
  async lift(input: { keyHex: string; reason: string; actor: string }): Promise<{
    quarantine: KeyQuarantine;
    lift: QuarantineLift;
  }> {
    const key = checkKey(input.keyHex);
    const reason = checkText("reason", input.reason, MAX_REASON);
    const actor = checkText("actor", input.actor, MAX_ACTOR);
    return withTransaction(this.pool, async (client) => {
      const { rows } = await client.query<QuarantineRow>(
        `DELETE FROM key_quarantine WHERE signing_key = $1 RETURNING ${QUARANTINE_COLUMNS}`,
        [key],
      );
      const row = rows[0];
      if (!row || row.remaining_ms <= 0) {
        throw new NotFoundError("no quarantine holds for this signing key");
      }
      const audit = await client.query<LiftRow>(
        `INSERT INTO key_quarantine_lifts (signing_key, code, message, until, reason, actor)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${LIFT_COLUMNS}`,
        [key, row.code, row.message, row.until, reason, actor],
      );
      return { quarantine: quarantine(row), lift: lift(audit.rows[0]!) };
    });
  }
}

/** A lowercase hex SEC1 uncompressed P-256 key, or InvalidArgumentError. */
function checkKey(value: string): string {
  const hex = value.trim().toLowerCase();
  if (!HEX_P256.test(hex)) {
    throw new InvalidArgumentError(
      "public_key",
      "public_key must be a SEC1 uncompressed P-256 point (65 bytes starting 0x04)",
    );
  }
  return hex;
}

function checkText(field: string, value: string, max: number): string {
  const text = value.trim();
  if (text === "" || text.length > max) {
    throw new InvalidArgumentError(field, `${field} is required (at most ${max} characters)`);
  }
  return text;
}

function quarantine(row: QuarantineRow): KeyQuarantine {
  return {
    keyHex: row.signing_key,
    code: row.code,
    message: row.message,
    until: row.until,
    createdAt: row.created_at,
    remainingMs: Math.max(0, row.remaining_ms),
  };
}

function lift(row: LiftRow): QuarantineLift {
  return {
    id: row.id,
    keyHex: row.signing_key,
    code: row.code,
    message: row.message,
    until: row.until,
    reason: row.reason,
    actor: row.actor,
    liftedAt: row.lifted_at,
  };
}
