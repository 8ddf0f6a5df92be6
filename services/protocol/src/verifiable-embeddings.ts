import { createHash, type KeyObject } from "node:crypto";
import {
  checkProof,
  concatBytes,
  domainSignatureMessage,
  proofInputs,
  type ResponseProof,
  readProof,
  recordWriter,
  type VerifyOptions,
  verifyDomainSignature,
} from "./verifiable-response.js";

/**
 * Verifiable embeddings, version 1 (docs/ARCHITECTURE.md, "Verifiable responses"). The provider signs,
 * with its attestation key (ECDSA P-256, SHA-256, DER), the 88-byte message
 *
 *   offset  size  content
 *   0       24    ASCII "darkbloom-embeddings-v1" followed by one 0x00 byte (domain separation from
 *                 the completions' response signatures, attestation blobs and challenge answers)
 *   24      32    request_sha256: SHA-256 of the request body exactly as the consumer sent it
 *   56      32    response_sha256: SHA-256 of the embeddings record below
 *
 * The embeddings record (integers unsigned big-endian; str is a u32 byte length then UTF-8):
 *
 *   str  provider_id         the provider id of the session (RegisterAck.provider_id)
 *   str  model               the response's `model`
 *   u32  n                   number of embeddings (one per input)
 *   n times, in index order 0..n-1:
 *     u32  index             the embedding's index (equal to its position)
 *     u32  d                 its length, then d IEEE-754 binary32 values, big-endian
 *   u32  prompt_tokens       usage.prompt_tokens as the provider reports it
 *
 * The values are the binary32 numbers the consumer receives: `encoding_format: base64` carries their
 * bytes (little-endian), and each JSON number of `float` is one of them written as the shortest
 * decimal that reads back as it, so the record can be rebuilt from either form.
 *
 * This module only needs node:crypto, so a consumer can use it without the rest of Darkbloom.
 */

/** The version of the embeddings signature this code makes and checks. */
export const EMBEDDINGS_SIGNATURE_VERSION = 1;
/** Domain separation from the completions' signatures (another record under the same key). */
export const EMBEDDINGS_SIGNATURE_DOMAIN = "darkbloom-embeddings-v1";

const DOMAIN_BYTES = new TextEncoder().encode(`${EMBEDDINGS_SIGNATURE_DOMAIN}\0`);

/** Everything an embeddings signature covers besides the request hash. */
export interface SignedEmbeddings {
  providerId: string;
  model: string;
  /** One vector per input, in input order. */
  embeddings: readonly Float32Array[];
  promptTokens: number;
}

/** SHA-256 of the embeddings record (see the module comment). Throws on one it cannot encode. */
export function embeddingsSha256(r: SignedEmbeddings): Uint8Array {
  const hash = createHash("sha256");
  writeEmbeddingsRecord(r, (bytes) => hash.update(bytes));
  return new Uint8Array(hash.digest());
}

/** The embeddings record's bytes. Throws on one it cannot encode. */
export function embeddingsRecord(r: SignedEmbeddings): Uint8Array {
  const parts: Uint8Array[] = [];
  writeEmbeddingsRecord(r, (bytes) => parts.push(bytes));
  return concatBytes(parts);
}

function writeEmbeddingsRecord(r: SignedEmbeddings, out: (bytes: Uint8Array) => void): void {
  const { u32, str } = recordWriter(out);
  str(r.providerId);
  str(r.model);
  u32(r.embeddings.length, "the number of embeddings");
  for (const [index, vector] of r.embeddings.entries()) {
    u32(index, "an embedding index");
    u32(vector.length, "an embedding's length");
    // One write per vector, not per value: a vector is thousands of them.
    const b = new Uint8Array(vector.length * 4);
    const view = new DataView(b.buffer);
    for (let i = 0; i < vector.length; i++) view.setFloat32(i * 4, vector[i] as number, false);
    out(b);
  }
  u32(r.promptTokens, "usage.prompt_tokens");
}

/** The exact bytes the provider signs. */
export function embeddingsSignatureMessage(
  requestSha256: Uint8Array,
  responseSha256: Uint8Array,
): Uint8Array {
  return domainSignatureMessage(DOMAIN_BYTES, requestSha256, responseSha256);
}

/** Whether `signature` (DER) is the key's signature of the two hashes. Never throws. */
export function verifyEmbeddingsSignature(
  signingKey: Uint8Array | KeyObject,
  requestSha256: Uint8Array,
  responseSha256: Uint8Array,
  signature: Uint8Array,
): boolean {
  return verifyDomainSignature(
    embeddingsSignatureMessage,
    signingKey,
    requestSha256,
    responseSha256,
    signature,
  );
}

/** A vector's wire form (ChunkPayload.embedding.values, the base64 encoding): binary32, little-endian. */
export function embeddingBytes(vector: Float32Array): Uint8Array {
  const out = new Uint8Array(vector.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < vector.length; i++) view.setFloat32(i * 4, vector[i] as number, true);
  return out;
}

/** The vector of a wire form; throws when the length is not a whole number of binary32 values. */
export function embeddingFromBytes(bytes: Uint8Array): Float32Array {
  if (bytes.byteLength % 4 !== 0) throw new Error(`${bytes.byteLength} bytes are not binary32 values`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.byteLength / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

export type VerifyEmbeddingsResult =
  | { ok: true; pinned: boolean; proof: ResponseProof; response: SignedEmbeddings }
  | { ok: false; reason: string; proof?: ResponseProof | undefined };

/** Whether a parsed JSON value is an embeddings response (`object: "list"` of embeddings). */
export function isEmbeddingsResponse(value: unknown): boolean {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as Record<string, unknown>).object === "list" &&
    Array.isArray((value as Record<string, unknown>).data)
  );
}

/**
 * Checks a saved embeddings response (the JSON body, parsed or as text): every embedding, in either
 * encoding, the model and the usage are read from the response itself and hashed into the record, so
 * any changed value fails the response hash; the key is only compared with `options.signingKey`.
 */
export function verifyEmbeddingsResponse(
  saved: unknown,
  options: VerifyOptions = {},
): VerifyEmbeddingsResult {
  let body: unknown = saved;
  if (typeof saved === "string") {
    try {
      body = JSON.parse(saved);
    } catch {
      return { ok: false, reason: "the saved response is not JSON" };
    }
  }
  if (!isEmbeddingsResponse(body))
    return { ok: false, reason: "the saved response is not an embeddings list" };
  const o = body as Record<string, unknown>;
  const proof = readProof(o.darkbloom, EMBEDDINGS_SIGNATURE_VERSION);
  if (typeof proof === "string") return { ok: false, reason: proof };
  const fail = (reason: string): VerifyEmbeddingsResult => ({ ok: false, reason, proof });
  if (typeof o.model !== "string") return fail("the response has no model");
  const embeddings: Float32Array[] = [];
  for (const [position, item] of (o.data as unknown[]).entries()) {
    const vector = readEmbedding(item, position);
    if (typeof vector === "string") return fail(vector);
    embeddings.push(vector);
  }
  const usage = o.usage as Record<string, unknown> | undefined;
  if (usage?.prompt_tokens !== proof.usage.prompt_tokens) {
    return fail(
      `the response's usage (${String(usage?.prompt_tokens)} prompt tokens) is not the usage signed (${proof.usage.prompt_tokens})`,
    );
  }
  const response: SignedEmbeddings = {
    providerId: proof.provider_id,
    model: o.model,
    embeddings,
    promptTokens: proof.usage.prompt_tokens,
  };
  const checked = checkProof(
    proof,
    options,
    proofInputs(proof, options, () => embeddingsRecord(response), embeddingsSignatureMessage),
    "its embeddings, model, usage and provider_id",
  );
  return checked === undefined
    ? { ok: true, pinned: options.signingKey !== undefined, proof, response }
    : fail(checked);
}

function readEmbedding(item: unknown, position: number): Float32Array | string {
  const at = `data[${position}]`;
  if (typeof item !== "object" || item === null) return `${at} is not an object`;
  const { index, embedding } = item as Record<string, unknown>;
  if (index !== position) return `${at}.index is ${JSON.stringify(index)}, not ${position}`;
  if (typeof embedding === "string") {
    const bytes = Buffer.from(embedding, "base64");
    if (bytes.byteLength % 4 !== 0) return `${at}.embedding is not base64 of binary32 values`;
    return embeddingFromBytes(bytes);
  }
  if (!Array.isArray(embedding)) return `${at}.embedding is neither an array of numbers nor base64`;
  const out = new Float32Array(embedding.length);
  for (const [i, v] of embedding.entries()) {
    // A number the provider did not send as binary32 cannot have been signed.
    if (typeof v !== "number" || Math.fround(v) !== v)
      return `${at}.embedding[${i}] is not a binary32 number`;
    out[i] = v;
  }
  return out;
}
