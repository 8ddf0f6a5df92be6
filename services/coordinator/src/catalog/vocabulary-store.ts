import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VOCABULARY_FILE_MAX_BYTES, vetVocabularyFile } from "@darkbloom/models/vocabulary";
import type pg from "pg";
import { InvalidArgumentError } from "../store/errors.js";
import { ModelNotFoundError } from "./errors.js";
import type { CatalogModel, ModelCatalog } from "./model-catalog.js";

/** One part of a vocabulary upload. */
export interface VocabularyPart {
  modelId: string;
  /** SHA-256 (lowercase hex) of the whole file. */
  sha256: string;
  /** Size of the whole file in bytes. */
  sizeBytes: number;
  /** Where this part starts; parts arrive in order. */
  offset: number;
  data: Uint8Array;
}

/** Where an upload stands: bytes received so far, and the model once the vocabulary is its own. */
export interface VocabularyUploadState {
  receivedBytes: number;
  model: CatalogModel | undefined;
}

/** The most one part may carry (RPC messages are bounded by the coordinator's body limit). */
export const VOCABULARY_PART_MAX_BYTES = 2 * 1024 * 1024;

const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * Catalog models' vocabularies (migration 0008), uploaded in parts. An upload is keyed by the file's
 * SHA-256; parts are appended only at the offset already received, so a retried part is accepted
 * once and a part out of order is refused with the offset expected. The complete file is checked
 * against its hash and vetted in a child process (llama.cpp may abort on a malformed file) before it
 * is stored and given to the model; a vocabulary already stored is given at once, with no upload.
 */
export class VocabularyStore {
  constructor(
    private readonly pool: pg.Pool,
    private readonly catalog: ModelCatalog,
  ) {}

  async upload(part: VocabularyPart): Promise<VocabularyUploadState> {
    const { modelId, sha256, sizeBytes, offset, data } = validate(part);
    if (this.catalog.get(modelId) === undefined) throw new ModelNotFoundError(modelId);
    const stored = await this.pool.query("SELECT 1 FROM vocabularies WHERE sha256 = $1", [sha256]);
    if (stored.rowCount)
      return { receivedBytes: sizeBytes, model: await this.catalog.setTokenizer(modelId, sha256) };

    // Uploads nobody touched for a day are abandoned.
    await this.pool.query("DELETE FROM vocabulary_uploads WHERE updated_at < now() - interval '1 day'");
    await this.pool.query(
      "INSERT INTO vocabulary_uploads (sha256, size_bytes) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING",
      [sha256, sizeBytes],
    );
    const appended = await this.pool.query<{ received: number }>(
      `UPDATE vocabulary_uploads SET received = received || $4, updated_at = now()
        WHERE sha256 = $1 AND size_bytes = $2 AND octet_length(received) = $3
        RETURNING octet_length(received) AS received`,
      [sha256, sizeBytes, offset, data],
    );
    let received = appended.rows[0]?.received;
    if (received === undefined) {
      const current = await this.pool.query<{ size: number; received: number }>(
        "SELECT size_bytes AS size, octet_length(received) AS received FROM vocabulary_uploads WHERE sha256 = $1",
        [sha256],
      );
      const row = current.rows[0];
      if (row === undefined)
        throw new InvalidArgumentError("sha256", "the upload was abandoned; start again");
      if (row.size !== sizeBytes) {
        throw new InvalidArgumentError(
          "size_bytes",
          `an upload of this hash is ${row.size} bytes, not ${sizeBytes}`,
        );
      }
      // A part sent again (its reply was lost) is already in; any other offset is out of order.
      if (offset + data.byteLength > row.received) {
        throw new InvalidArgumentError("offset", `the upload expects offset ${row.received}, not ${offset}`);
      }
      received = row.received;
    }
    if (received < sizeBytes) return { receivedBytes: received, model: undefined };
    await this.complete(sha256);
    return { receivedBytes: sizeBytes, model: await this.catalog.setTokenizer(modelId, sha256) };
  }

  /** Takes the model's vocabulary away: its usage is bounded from the text again. */
  clear(modelId: string): Promise<CatalogModel> {
    return this.catalog.setTokenizer(modelId, undefined);
  }

  /** Verifies and vets a complete upload, then stores it as a vocabulary. */
  private async complete(sha256: string): Promise<void> {
    const { rows } = await this.pool.query<{ received: Buffer }>(
      "SELECT received FROM vocabulary_uploads WHERE sha256 = $1",
      [sha256],
    );
    const bytes = rows[0]?.received;
    if (bytes === undefined) return; // completed by a concurrent last part
    const actual = createHash("sha256").update(bytes).digest("hex");
    if (actual !== sha256) {
      await this.pool.query("DELETE FROM vocabulary_uploads WHERE sha256 = $1", [sha256]);
      throw new InvalidArgumentError(
        "sha256",
        `the file received has SHA-256 ${actual}, not ${sha256}; start again`,
      );
    }
    const dir = await mkdtemp(join(tmpdir(), "darkbloom-vocabulary-"));
    try {
      const path = join(dir, `${sha256}.gguf`);
      await writeFile(path, bytes);
      const verdict = await vetVocabularyFile(path);
      if (!verdict.ok) {
        await this.pool.query("DELETE FROM vocabulary_uploads WHERE sha256 = $1", [sha256]);
        throw new InvalidArgumentError("vocabulary", `the vocabulary was refused: ${verdict.reason}`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    await this.pool.query(
      `WITH moved AS (DELETE FROM vocabulary_uploads WHERE sha256 = $1 RETURNING received)
       INSERT INTO vocabularies (sha256, gguf) SELECT $1, received FROM moved ON CONFLICT (sha256) DO NOTHING`,
      [sha256],
    );
  }
}

/** A stored vocabulary's bytes. */
export async function readVocabulary(pool: pg.Pool, sha256: string): Promise<Uint8Array | undefined> {
  const { rows } = await pool.query<{ gguf: Buffer }>("SELECT gguf FROM vocabularies WHERE sha256 = $1", [
    sha256,
  ]);
  return rows[0]?.gguf;
}

function validate(part: VocabularyPart): VocabularyPart {
  const sha256 = part.sha256.toLowerCase();
  if (!SHA256_HEX.test(sha256)) throw new InvalidArgumentError("sha256", "sha256 must be 64 hex digits");
  if (
    !Number.isSafeInteger(part.sizeBytes) ||
    part.sizeBytes < 1 ||
    part.sizeBytes > VOCABULARY_FILE_MAX_BYTES
  ) {
    throw new InvalidArgumentError(
      "size_bytes",
      `size_bytes must be from 1 to ${VOCABULARY_FILE_MAX_BYTES} (a vocabulary-only GGUF, no weights)`,
    );
  }
  if (part.data.byteLength > VOCABULARY_PART_MAX_BYTES) {
    throw new InvalidArgumentError("data", `a part may carry at most ${VOCABULARY_PART_MAX_BYTES} bytes`);
  }
  if (
    !Number.isSafeInteger(part.offset) ||
    part.offset < 0 ||
    part.offset + part.data.byteLength > part.sizeBytes
  ) {
    throw new InvalidArgumentError("offset", "offset and data must lie within size_bytes");
  }
  return { ...part, sha256 };
}
