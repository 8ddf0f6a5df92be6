import { p256PublicKeyFromRaw } from "@darkbloom/protocol";
import type pg from "pg";
import { AlreadyExistsError, InvalidArgumentError, NotFoundError } from "../store/errors.js";
import { withTransaction } from "../store/transaction.js";

/** A machine id and the attestation signing key it belongs to. */
export interface MachineBinding {
  machineId: string;
  /** SEC1 uncompressed P-256 point (65 bytes). */
  publicKey: Uint8Array;
  /** When the key first attested for this machine id (or an administrator bound it). */
  firstAttestedAt: Date;
  /** The bound key's latest registration for this machine id (or the re-bind). */
  lastSeenAt: Date;
}

/** One administrator's re-bind, as audited. */
export interface MachineRebind {
  id: string;
  machineId: string;
  /** The key the machine id was bound to before; undefined when it was not bound. */
  oldPublicKey: Uint8Array | undefined;
  newPublicKey: Uint8Array;
  reason: string;
  actor: string;
  reboundAt: Date;
}

/** What a registration's claim on a machine id came to. */
export type MachineClaim =
  /** The key attested for this machine id first: it is bound to it from now on. */
  | { outcome: "bound"; binding: MachineBinding }
  /** The machine id is bound to this key already. */
  | { outcome: "confirmed"; binding: MachineBinding }
  /**
   * No key holds the machine id, and the claim brought none that may bind it (no key, or an ephemeral
   * one): nothing to protect, nothing bound.
   */
  | { outcome: "unbound" }
  /** The machine id is bound to another key (or a claim without a key met a bound machine id). */
  | { outcome: "refused"; binding: MachineBinding };

const MAX_MACHINE_ID = 256;
const MAX_REASON = 1000;
const MAX_ACTOR = 256;
const MAX_HISTORY = 100;

interface BindingRow {
  machine_id: string;
  public_key: Buffer;
  first_attested_at: Date;
  last_seen_at: Date;
}

interface RebindRow {
  id: string;
  machine_id: string;
  old_public_key: Buffer | null;
  new_public_key: Buffer;
  reason: string;
  actor: string;
  rebound_at: Date;
}

const BINDING_COLUMNS = "machine_id, public_key, first_attested_at, last_seen_at";
const REBIND_COLUMNS =
  "id::text AS id, machine_id, old_public_key, new_public_key, reason, actor, rebound_at";

/**
 * The machine_bindings table (migration 0005): which signing key each machine id belongs to. A
 * machine id is bound by the first registration whose attestation verified for it (the key signed a
 * blob naming that machine id), in one INSERT … ON CONFLICT, so of two racing first registrations
 * exactly one binds; from then on only that key may register the machine id, on any coordinator
 * sharing the database and after any restart, until an administrator re-binds it (audited).
 */
export class MachineBindingStore {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * Claims `machineId` for a registration presenting `publicKey` (its verified attestation key), or
   * no key. Binds an unbound machine id to the key when `bind` (a persistent key: an ephemeral one,
   * bound, would lock its machine out at its next restart); refreshes last_seen_at when it is the
   * bound key. Database errors propagate (the caller refuses the registration rather than admit an
   * unchecked key).
   */
  async claim(machineId: string, publicKey: Uint8Array | undefined, bind = true): Promise<MachineClaim> {
    if (publicKey === undefined || !bind) {
      const binding = await this.get(machineId);
      if (!binding) return { outcome: "unbound" };
      const same = publicKey !== undefined && Buffer.from(publicKey).equals(binding.publicKey);
      return { outcome: same ? "confirmed" : "refused", binding };
    }
    // A conflicting insert waits for the other transaction; then the WHERE decides: the same key
    // refreshes last_seen_at and gets its row back, another key gets no row. (xmax = 0: inserted.)
    const { rows } = await this.pool.query<BindingRow & { created: boolean }>(
      `INSERT INTO machine_bindings (machine_id, public_key) VALUES ($1, $2)
       ON CONFLICT (machine_id) DO UPDATE SET last_seen_at = now()
         WHERE machine_bindings.public_key = EXCLUDED.public_key
       RETURNING ${BINDING_COLUMNS}, (xmax = 0) AS created`,
      [machineId, Buffer.from(publicKey)],
    );
    const row = rows[0];
    if (row) return { outcome: row.created ? "bound" : "confirmed", binding: binding(row) };
    const existing = await this.get(machineId);
    // Unreachable unless a row was deleted in between, which nothing does; refusing is the safe side.
    if (!existing) throw new Error(`machine_id ${machineId} conflicted with a binding that is gone`);
    return { outcome: "refused", binding: existing };
  }

  async get(machineId: string): Promise<MachineBinding | undefined> {
    const { rows } = await this.pool.query<BindingRow>(
      `SELECT ${BINDING_COLUMNS} FROM machine_bindings WHERE machine_id = $1`,
      [machineId],
    );
    return rows[0] ? binding(rows[0]) : undefined;
  }

  /** The binding of a machine id, or NotFoundError naming it. */
  async require(machineId: string): Promise<MachineBinding> {
    const found = await this.get(checkMachineId(machineId));
    if (!found) throw new NotFoundError(`machine_id ${machineId} is not bound to any key`);
    return found;
  }

  /** The bound keys (lowercase hex) of those of `machineIds` that are bound. */
  async boundKeys(machineIds: readonly string[]): Promise<Map<string, string>> {
    if (machineIds.length === 0) return new Map();
    const { rows } = await this.pool.query<{ machine_id: string; public_key: Buffer }>(
      "SELECT machine_id, public_key FROM machine_bindings WHERE machine_id = ANY($1::text[])",
      [machineIds],
    );
    return new Map(rows.map((r) => [r.machine_id, r.public_key.toString("hex")]));
  }

  /** A machine id's re-binds, newest first (at most 100). */
  async rebinds(machineId: string): Promise<MachineRebind[]> {
    const { rows } = await this.pool.query<RebindRow>(
      `SELECT ${REBIND_COLUMNS} FROM machine_rebinds WHERE machine_id = $1 ORDER BY id DESC LIMIT $2`,
      [machineId, MAX_HISTORY],
    );
    return rows.map(rebind);
  }

  /**
   * Binds `machineId` to `publicKey` whatever it was bound to (or binds it ahead of its first
   * registration), and records who did it, when, why, and the old and new keys in the same
   * transaction. Throws InvalidArgumentError for a bad machine id, key, reason or actor, and
   * AlreadyExistsError when the machine id is bound to that key already (nothing to re-bind).
   */
  async rebind(input: {
    machineId: string;
    publicKey: Uint8Array;
    reason: string;
    actor: string;
  }): Promise<{ binding: MachineBinding; rebind: MachineRebind }> {
    const machineId = checkMachineId(input.machineId);
    const publicKey = checkPublicKey(input.publicKey);
    const reason = checkText("reason", input.reason, MAX_REASON);
    const actor = checkText("actor", input.actor, MAX_ACTOR);
    return withTransaction(this.pool, async (client) => {
      const lock = () =>
        client
          .query<BindingRow>(
            `SELECT ${BINDING_COLUMNS} FROM machine_bindings WHERE machine_id = $1 FOR UPDATE`,
            [machineId],
          )
          .then((r) => r.rows[0]);
      let old = await lock();
      let row: BindingRow | undefined;
      if (!old) {
        // Nothing to lock yet: a first registration racing this insert either commits first (then
        // its binding is locked and replaced below, audited as the old key) or waits and is refused.
        row = (
          await client.query<BindingRow>(
            `INSERT INTO machine_bindings (machine_id, public_key) VALUES ($1, $2)
             ON CONFLICT (machine_id) DO NOTHING RETURNING ${BINDING_COLUMNS}`,
            [machineId, publicKey],
          )
        ).rows[0];
        if (!row) old = await lock();
      }
      if (old) {
        if (old.public_key.equals(publicKey)) {
          throw new AlreadyExistsError(`machine_id ${machineId} is bound to this key already`);
        }
        row = (
          await client.query<BindingRow>(
            `UPDATE machine_bindings SET public_key = $2, first_attested_at = now(), last_seen_at = now()
             WHERE machine_id = $1 RETURNING ${BINDING_COLUMNS}`,
            [machineId, publicKey],
          )
        ).rows[0];
      }
      const audit = await client.query<RebindRow>(
        `INSERT INTO machine_rebinds (machine_id, old_public_key, new_public_key, reason, actor)
         VALUES ($1, $2, $3, $4, $5) RETURNING ${REBIND_COLUMNS}`,
        [machineId, old?.public_key ?? null, publicKey, reason, actor],
      );
      return { binding: binding(row!), rebind: rebind(audit.rows[0]!) };
    });
  }
}

function checkMachineId(value: string): string {
  if (value === "" || value.length > MAX_MACHINE_ID) {
    throw new InvalidArgumentError("machine_id", `machine_id must be 1 to ${MAX_MACHINE_ID} characters`);
  }
  return value;
}

function checkPublicKey(value: Uint8Array): Buffer {
  try {
    p256PublicKeyFromRaw(value);
  } catch {
    throw new InvalidArgumentError(
      "public_key",
      `public_key must be a SEC1 uncompressed P-256 point on the curve (65 bytes starting 0x04), got ${value.length} bytes`,
    );
  }
  return Buffer.from(value);
}

function checkText(field: string, value: string, max: number): string {
  const text = value.trim();
  if (text === "" || text.length > max) {
    throw new InvalidArgumentError(field, `${field} is required (at most ${max} characters)`);
  }
  return text;
}

function binding(row: BindingRow): MachineBinding {
  return {
    machineId: row.machine_id,
    publicKey: new Uint8Array(row.public_key),
    firstAttestedAt: row.first_attested_at,
    lastSeenAt: row.last_seen_at,
  };
}

function rebind(row: RebindRow): MachineRebind {
  return {
    id: row.id,
    machineId: row.machine_id,
    oldPublicKey: row.old_public_key ? new Uint8Array(row.old_public_key) : undefined,
    newPublicKey: new Uint8Array(row.new_public_key),
    reason: row.reason,
    actor: row.actor,
    reboundAt: row.rebound_at,
  };
}
