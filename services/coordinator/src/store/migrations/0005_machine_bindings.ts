import type { Migration } from "./migration.js";

/**
 * Machine identity: a machine id is bound to the first attestation signing key that claimed it (the
 * key signed a blob naming that machine id), across sessions and restarts, so that a published
 * machine id cannot be registered with another key while the machine is offline. Keys are SEC1
 * uncompressed P-256 points (65 bytes), as attestations carry them; public, but never logged.
 *
 * Moving a machine id to another key is an administrator's action only, and each one is recorded in
 * machine_rebinds in the same transaction as the change (append-only: nothing updates or deletes it).
 */
export const machineBindings: Migration = {
  version: 5,
  name: "machine_bindings",
  sql: `
CREATE TABLE machine_bindings (
  machine_id         text PRIMARY KEY CHECK (machine_id <> '' AND length(machine_id) <= 256),
  public_key         bytea NOT NULL CHECK (length(public_key) = 65 AND get_byte(public_key, 0) = 4),
  first_attested_at  timestamptz NOT NULL DEFAULT now(),
  -- The last registration of the bound key for this machine id (or the re-bind that set the key).
  last_seen_at       timestamptz NOT NULL DEFAULT now()
);
-- Which machine ids a key holds (admin look-ups, duplicate-key investigations).
CREATE INDEX machine_bindings_public_key_idx ON machine_bindings (public_key);

CREATE TABLE machine_rebinds (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  machine_id      text NOT NULL CHECK (machine_id <> ''),
  -- NULL when the machine id was not bound before (an administrator bound it ahead of its first
  -- registration).
  old_public_key  bytea CHECK (old_public_key IS NULL OR length(old_public_key) = 65),
  new_public_key  bytea NOT NULL CHECK (length(new_public_key) = 65 AND get_byte(new_public_key, 0) = 4),
  reason          text NOT NULL CHECK (btrim(reason) <> '' AND length(reason) <= 1000),
  actor           text NOT NULL CHECK (btrim(actor) <> '' AND length(actor) <= 256),
  rebound_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX machine_rebinds_machine_idx ON machine_rebinds (machine_id, id DESC);
`,
};
