import type { Migration } from "./migration.js";

/**
 * Key quarantine: a signing key the data path caught misbehaving (a plaintext chunk, a bad response
 * signature, token counts its text cannot hold) after the session proved the key with a passed
 * challenge stays untrusted until `until`, on every coordinator sharing the database and after any
 * restart, under whatever machine id it registers next. Keys are SEC1 uncompressed P-256 points in
 * lowercase hex (130 digits), as the trust code and the attestation list carry them. Never a machine
 * id: machine ids are public, and anyone could get one quarantined by misbehaving under it.
 *
 * A finding for a key already quarantined extends `until` (never shortens it) and takes its code and
 * message. Rows past `until` mean nothing: readers ignore them and writers delete them.
 *
 * Lifting a quarantine early is an administrator's action only, recorded in key_quarantine_lifts in
 * the same transaction that deletes the row (append-only: nothing updates or deletes it).
 */
export const keyQuarantine: Migration = {
  version: 9,
  name: "key_quarantine",
  sql: `
CREATE TABLE key_quarantine (
  signing_key  text PRIMARY KEY CHECK (signing_key ~ '^04[0-9a-f]{128}$'),
  -- The finding: a trust reason code and its message (no prompt or completion text).
  code         text NOT NULL CHECK (code <> '' AND length(code) <= 64),
  message      text NOT NULL CHECK (length(message) <= 1000),
  until        timestamptz NOT NULL,
  -- When this quarantine began (a finding after an expired one begins a new one).
  created_at   timestamptz NOT NULL DEFAULT now()
);
-- Pruning expired rows.
CREATE INDEX key_quarantine_until_idx ON key_quarantine (until);

CREATE TABLE key_quarantine_lifts (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  signing_key  text NOT NULL CHECK (signing_key ~ '^04[0-9a-f]{128}$'),
  -- The quarantine lifted, as it stood.
  code         text NOT NULL,
  message      text NOT NULL,
  until        timestamptz NOT NULL,
  reason       text NOT NULL CHECK (btrim(reason) <> '' AND length(reason) <= 1000),
  actor        text NOT NULL CHECK (btrim(actor) <> '' AND length(actor) <= 256),
  lifted_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX key_quarantine_lifts_key_idx ON key_quarantine_lifts (signing_key, id DESC);
`,
};
