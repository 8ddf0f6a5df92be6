import type { Migration } from "./migration.js";

/**
 * The cluster-wide provider directory: one row per provider session connected to any coordinator
 * replica, written only by the replica that holds the session's stream (instance_id, the id its
 * coordinator_instances liveness row has) and read by every replica, so that model lists, the
 * attestation list and admin views answer the same wherever a request lands. A replica deletes its
 * rows as sessions end and at shutdown; rows of a replica whose liveness row went stale are ignored by
 * readers and deleted by whichever replica sees them. Changes are announced with
 * NOTIFY provider_directory (no payload: readers re-read the table).
 *
 * machine_id is indexed but not unique: a machine reconnecting over a half-open stream briefly has a
 * contender session next to its holder (link/session-manager.ts), and a dead replica's row lingers
 * until its liveness goes stale; the one-live-session-per-machine guard is the session manager's.
 */
export const providerDirectory: Migration = {
  version: 7,
  name: "provider_directory",
  sql: `
CREATE TABLE provider_directory (
  provider_id     text PRIMARY KEY CHECK (provider_id <> ''),
  instance_id     text NOT NULL CHECK (instance_id <> ''),
  -- Where other replicas reach the owning replica (its advertise URL).
  advertise_url   text NOT NULL CHECK (advertise_url <> ''),
  machine_id      text NOT NULL CHECK (length(machine_id) <= 256),
  -- [{"id": model id, "contextLength": tokens}], as the provider registered them.
  models          jsonb NOT NULL CHECK (jsonb_typeof(models) = 'array'),
  max_batch       integer NOT NULL CHECK (max_batch >= 0),
  free_slots      integer NOT NULL,
  trust_level     text NOT NULL,
  -- The trust judgement's reason codes (codes only: messages stay with the owning replica).
  trust_reasons   text[] NOT NULL DEFAULT '{}',
  attested        boolean NOT NULL DEFAULT false,
  routable        boolean NOT NULL,
  draining        boolean NOT NULL DEFAULT false,
  daemon_version  text NOT NULL,
  chip            text NOT NULL DEFAULT '',
  -- The provider's attestation and its judgement as GET /v1/providers/attestation lists it (public
  -- data: the attestation blob, its key and the last challenge's outcome).
  attestation     jsonb,
  connected_at    timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_directory_instance_idx ON provider_directory (instance_id);
CREATE INDEX provider_directory_machine_idx ON provider_directory (machine_id) WHERE machine_id <> '';
`,
};
