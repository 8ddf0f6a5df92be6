import type { Migration } from "./migration.js";

/**
 * Each catalog model's vocabulary: a vocabulary-only GGUF (the model file's metadata and tokenizer,
 * no tensors) that the coordinator counts prompt and completion tokens with, so that usage is the
 * coordinator's count and not a provider's claim. Content-addressed by SHA-256: models that share a
 * tokenizer share its row, and a replica loads a vocabulary once per hash.
 *
 * Vocabularies of real models are several MB, more than one RPC message may carry, so they arrive in
 * parts: vocabulary_uploads holds an upload in progress (parts are appended in order; an upload
 * untouched for a day is deleted), and only a complete, verified file becomes a vocabularies row.
 */
export const modelTokenizers: Migration = {
  version: 8,
  name: "model_tokenizers",
  sql: `
CREATE TABLE vocabularies (
  sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  gguf        bytea NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vocabulary_uploads (
  sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  size_bytes  integer NOT NULL CHECK (size_bytes > 0),
  received    bytea NOT NULL DEFAULT '',
  updated_at  timestamptz NOT NULL DEFAULT now(),
  CHECK (octet_length(received) <= size_bytes)
);

-- NULL: the model has no vocabulary and its usage is bounded from the text, not counted.
ALTER TABLE models ADD COLUMN tokenizer_sha256 text REFERENCES vocabularies (sha256);
`,
};
