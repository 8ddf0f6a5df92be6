import type { Migration } from "./migration.js";

/**
 * Each request's X-Timing phases as they stood when it was settled (microseconds by phase), so the
 * account's usage shows where a request's time went on whichever replica served it. Diagnostics, not
 * money: written in batches off the serving path, and a row may be missing (a batch the database did
 * not take is dropped). Kept apart from reservations so the money table is not rewritten for them.
 */
export const requestTimings: Migration = {
  version: 12,
  name: "request_timings",
  sql: `
CREATE TABLE request_timings (
  request_id text PRIMARY KEY,
  phases jsonb NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX request_timings_recorded_at ON request_timings (recorded_at);
`,
};
