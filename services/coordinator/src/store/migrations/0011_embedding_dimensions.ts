import type { Migration } from "./migration.js";

/**
 * The shortest embedding a catalog model may be asked for (`dimensions`): set for a model trained
 * for Matryoshka shortening (Qwen3-Embedding: 32), whose first d values, normalized again, are an
 * embedding of their own. Nothing in a GGUF says so, so the catalog does; NULL: only the model's own
 * length is served.
 */
export const embeddingDimensions: Migration = {
  version: 11,
  name: "embedding_dimensions",
  sql: `
ALTER TABLE models ADD COLUMN embedding_min_dimensions integer CHECK (embedding_min_dimensions > 0);
`,
};
