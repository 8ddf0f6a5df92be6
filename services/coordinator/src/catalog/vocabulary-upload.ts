/** The client side of a vocabulary upload (admin models vocabulary, the local network, the testbed). */
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Client } from "@connectrpc/connect";
import { GgufFormatError, readGgufMetadata } from "@darkbloom/models/gguf";
import { writeVocabularyFile } from "@darkbloom/models/vocabulary";
import type { AdminService, CatalogModel } from "@darkbloom/protocol/admin/v1";
import { VOCABULARY_PART_MAX_BYTES } from "./vocabulary-store.js";

/**
 * The vocabulary-only copy of a GGUF (the file itself when it has no tensors); an error saying what
 * is wrong with the file otherwise.
 */
export async function vocabularyOf(file: string): Promise<Uint8Array> {
  let tensors: number;
  try {
    tensors = (await readGgufMetadata(file)).tensors.length;
  } catch (e) {
    const reason =
      e instanceof GgufFormatError ? e.message : ((e as NodeJS.ErrnoException).code ?? String(e));
    throw new Error(`${file} is not a readable GGUF file (${reason})`);
  }
  if (tensors === 0) return readFile(file);
  const dir = await mkdtemp(join(tmpdir(), "darkbloom-vocabulary-"));
  try {
    const path = join(dir, "vocabulary.gguf");
    try {
      await writeVocabularyFile(file, path);
    } catch (e) {
      throw new Error(`${file} has no usable vocabulary (${(e as Error).message})`);
    }
    return await readFile(path);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Sends the vocabulary in parts, resuming an upload of the same file that stopped part-way. */
export async function uploadVocabulary(
  client: Client<typeof AdminService>,
  modelId: string,
  bytes: Uint8Array,
): Promise<CatalogModel | undefined> {
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const part = (offset: number, data: Uint8Array) =>
    client.uploadModelVocabulary({
      modelId,
      sha256,
      sizeBytes: BigInt(bytes.byteLength),
      offset: BigInt(offset),
      data,
    });
  // An empty first part asks where the upload stands (0 for a new one; done for a known vocabulary).
  let response = await part(0, new Uint8Array(0));
  while (response.model === undefined) {
    const offset = Number(response.receivedBytes);
    response = await part(offset, bytes.subarray(offset, offset + VOCABULARY_PART_MAX_BYTES));
  }
  return response.model;
}
