import type { Migration } from "./migration.js";

/**
 * A release may raise the fleet's minimum daemon version: while it is active, daemons older than its
 * min_provider_version are not routed to (empty: no minimum).
 */
export const releasePolicy: Migration = {
  version: 4,
  name: "release_policy",
  sql: `
ALTER TABLE releases ADD COLUMN min_provider_version text NOT NULL DEFAULT '';
`,
};
