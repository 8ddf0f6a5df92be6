import type { Migration } from "./migration.js";

/**
 * What another replica needs to route to a provider in the directory and forward requests to it
 * (cluster/remote-providers.ts): the keys its requests are sealed to and its responses verified
 * with (public keys, hex), what its usage figures mean (Register.usage_version) and its advertised
 * rates (claims, a clamped prior only, as for local providers). One jsonb document, written by
 * replicas of the same code and read defensively: a malformed one makes the provider unroutable
 * from other replicas, never trusted.
 */
export const directoryDispatch: Migration = {
  version: 10,
  name: "directory_dispatch",
  sql: `
ALTER TABLE provider_directory ADD COLUMN dispatch jsonb NOT NULL DEFAULT '{}'::jsonb;
`,
};
