import { createHash, type KeyObject, verify as verifySignature } from "node:crypto";
import { p256PublicKeyFromRaw } from "./p256.js";

/**
 * Verifiable responses (docs/ARCHITECTURE.md, "Verifiable responses"). The provider signs, with its
 * attestation key (ECDSA P-256, SHA-256), the message
 *
 *   offset  size  content
 *   0       22    ASCII "darkbloom-response-v1" followed by one 0x00 byte (domain separation from
 *                 the attestation blob and challenge signatures made with the same key)
 *   22      32    request_sha256
 *   54      32    response_sha256
 *
 * where request_sha256 is SHA-256 of the request body exactly as the consumer sent it, and
 * response_sha256 is SHA-256 of the response bytes: for each choice in index order 0..n-1 (n choices,
 * the request's `n`, default 1), the byte length of the UTF-8 encoding of the choice's whole text as a
 * 4-byte big-endian unsigned integer, followed by that UTF-8 encoding. The consumer receives a
 * `darkbloom` object with the hashes (lowercase hex), the signature (base64 DER) and the signing key
 * (base64 SEC1 uncompressed point, 65 bytes), and checks it with verifyResponse().
 *
 * This module only needs node:crypto, so a consumer can use it without the rest of Darkbloom.
 */

/** Domain separation: the attestation key signs other things (attestation blobs, challenges) too. */
export const RESPONSE_SIGNATURE_DOMAIN = "darkbloom-response-v1";

const DOMAIN_BYTES = new TextEncoder().encode(`${RESPONSE_SIGNATURE_DOMAIN}\0`);
const utf8 = new TextEncoder();

/** The `darkbloom` object on a response, as the consumer receives it. */
export interface ResponseProof {
  provider_id: string;
  /** "none", "self_signed" or "hardware" at the time the response was served. */
  trust_level: string;
  /** Base64 of the provider's P-256 public key (SEC1 uncompressed point); null when it has none. */
  signing_key: string | null;
  /** Lowercase hex SHA-256 of the request body bytes. */
  request_sha256: string;
  /** Lowercase hex SHA-256 of the response bytes (see responseBytes). */
  response_sha256: string;
  /** Base64 ECDSA P-256 signature (DER) over responseSignatureMessage; null when unsigned. */
  signature: string | null;
}

/** The response bytes of a response whose choices have these texts (in index order). */
export function responseBytes(texts: readonly string[]): Uint8Array {
  const encoded = texts.map((t) => utf8.encode(t));
  const out = new Uint8Array(encoded.reduce((n, e) => n + 4 + e.byteLength, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const e of encoded) {
    view.setUint32(at, e.byteLength, false);
    out.set(e, at + 4);
    at += 4 + e.byteLength;
  }
  return out;
}

/**
 * SHA-256 of the response bytes of these choice texts, fed choice by choice (without building the
 * whole buffer).
 */
export function responseSha256(texts: readonly string[]): Uint8Array {
  const hash = createHash("sha256");
  const length = Buffer.alloc(4);
  for (const t of texts) {
    const bytes = Buffer.from(t, "utf8");
    length.writeUInt32BE(bytes.byteLength, 0);
    hash.update(length);
    hash.update(bytes);
  }
  return new Uint8Array(hash.digest());
}

export function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(bytes).digest());
}

/** The exact bytes the provider signs. */
export function responseSignatureMessage(requestSha256: Uint8Array, responseSha256: Uint8Array): Uint8Array {
  if (requestSha256.byteLength !== 32 || responseSha256.byteLength !== 32) {
    throw new Error("request_sha256 and response_sha256 must be 32 bytes each");
  }
  const out = new Uint8Array(DOMAIN_BYTES.byteLength + 64);
  out.set(DOMAIN_BYTES, 0);
  out.set(requestSha256, DOMAIN_BYTES.byteLength);
  out.set(responseSha256, DOMAIN_BYTES.byteLength + 32);
  return out;
}

/** Whether `signature` (DER) is the key's signature of the response hashes. Never throws. */
export function verifyResponseSignature(
  signingKey: Uint8Array | KeyObject,
  requestSha256: Uint8Array,
  responseSha256: Uint8Array,
  signature: Uint8Array,
): boolean {
  try {
    const key = signingKey instanceof Uint8Array ? p256PublicKeyFromRaw(signingKey) : signingKey;
    return verifySignature("sha256", responseSignatureMessage(requestSha256, responseSha256), key, signature);
  } catch {
    return false;
  }
}

export interface VerifyOptions {
  /** The request body exactly as sent; when given, request_sha256 must be its hash. */
  requestBody?: Uint8Array | string | undefined;
  /** Base64 SEC1 key the response must be signed with (e.g. from GET /v1/providers/attestation). */
  signingKey?: string | undefined;
}

export type VerifyResult =
  | { ok: true; proof: ResponseProof; texts: string[] }
  | { ok: false; reason: string; proof?: ResponseProof | undefined };

/**
 * Checks a saved response: a non-streaming chat or text completion body (parsed JSON or its text),
 * or the text of a saved SSE stream (`data: …` events up to `data: [DONE]`). The choice texts are
 * read from the response itself, so any changed character fails the response hash.
 */
export function verifyResponse(saved: unknown, options: VerifyOptions = {}): VerifyResult {
  let read: { texts: string[]; proof: unknown };
  try {
    read = readSaved(saved);
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  const proof = parseProof(read.proof);
  if (typeof proof === "string") return { ok: false, reason: proof };
  const fail = (reason: string): VerifyResult => ({ ok: false, reason, proof });
  if (proof.signature === null || proof.signing_key === null) {
    return fail("the response is not signed (its provider has no signing key)");
  }
  const computed = hex(responseSha256(read.texts));
  if (computed !== proof.response_sha256) {
    return fail(`response_sha256 does not match the response content (computed ${computed})`);
  }
  if (options.requestBody !== undefined) {
    const body =
      typeof options.requestBody === "string" ? utf8.encode(options.requestBody) : options.requestBody;
    const requestHash = hex(sha256(body));
    if (requestHash !== proof.request_sha256) {
      return fail(`request_sha256 does not match the request body (computed ${requestHash})`);
    }
  }
  if (options.signingKey !== undefined && options.signingKey !== proof.signing_key) {
    return fail("the response is signed by another key than the one expected");
  }
  let key: KeyObject;
  try {
    key = p256PublicKeyFromRaw(Buffer.from(proof.signing_key, "base64"));
  } catch (e) {
    return fail(`signing_key is not usable: ${(e as Error).message}`);
  }
  const valid = verifyResponseSignature(
    key,
    Buffer.from(proof.request_sha256, "hex"),
    Buffer.from(proof.response_sha256, "hex"),
    Buffer.from(proof.signature, "base64"),
  );
  if (!valid) return fail("the signature does not verify with signing_key");
  return { ok: true, proof, texts: read.texts };
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

type Json = Record<string, unknown>;

function readSaved(saved: unknown): { texts: string[]; proof: unknown } {
  if (saved instanceof Uint8Array) saved = Buffer.from(saved).toString("utf8");
  if (typeof saved === "string") {
    const trimmed = saved.trimStart();
    if (trimmed.startsWith("data:") || trimmed.startsWith(":") || trimmed.startsWith("event:")) {
      return readStream(saved);
    }
    try {
      saved = JSON.parse(saved);
    } catch {
      throw new Error("the saved response is neither JSON nor an SSE stream");
    }
  }
  if (typeof saved !== "object" || saved === null || Array.isArray(saved)) {
    throw new Error("the saved response is not a JSON object");
  }
  const body = saved as Json;
  if (!Array.isArray(body.choices)) throw new Error("the saved response has no choices");
  const texts: string[] = [];
  for (const c of body.choices as unknown[]) {
    const choice = (c ?? {}) as Json;
    const index = typeof choice.index === "number" ? choice.index : texts.length;
    const message = choice.message as Json | undefined;
    const text = message !== undefined ? message.content : choice.text;
    if (text !== undefined && text !== null && typeof text !== "string") {
      throw new Error(`choice ${index} has non-text content`);
    }
    texts[index] = text ?? "";
  }
  return { texts: fill(texts), proof: body.darkbloom };
}

/** Reassembles the choice texts of an SSE transcript and finds its `darkbloom` event. */
function readStream(transcript: string): { texts: string[]; proof: unknown } {
  const texts: string[] = [];
  let proof: unknown;
  let done = false;
  for (const event of transcript.split(/\r?\n\r?\n/)) {
    const data = event
      .split(/\r?\n/)
      .filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).replace(/^ /, ""))
      .join("\n");
    if (data === "") continue;
    if (data === "[DONE]") {
      done = true;
      continue;
    }
    let o: Json;
    try {
      o = JSON.parse(data) as Json;
    } catch {
      throw new Error("the SSE stream has an event that is not JSON");
    }
    if (o.error !== undefined) throw new Error("the SSE stream ended with an error event");
    if (o.darkbloom !== undefined) proof = o.darkbloom;
    if (!Array.isArray(o.choices)) continue;
    for (const c of o.choices as Json[]) {
      const index = typeof c.index === "number" ? c.index : 0;
      const delta = c.delta as Json | undefined;
      const piece = delta !== undefined ? delta.content : c.text;
      texts[index] = (texts[index] ?? "") + (typeof piece === "string" ? piece : "");
    }
  }
  if (!done) throw new Error("the SSE stream is incomplete (no data: [DONE])");
  return { texts: fill(texts), proof };
}

function fill(texts: string[]): string[] {
  return Array.from({ length: texts.length }, (_, i) => texts[i] ?? "");
}

const HEX64 = /^[0-9a-f]{64}$/;

function parseProof(value: unknown): ResponseProof | string {
  if (value === undefined || value === null) return "the response has no darkbloom object";
  if (typeof value !== "object" || Array.isArray(value)) return "the darkbloom field is not an object";
  const o = value as Json;
  const str = (k: string) => (typeof o[k] === "string" ? (o[k] as string) : undefined);
  const nullable = (k: string) => (o[k] === null ? null : str(k));
  const requestHash = str("request_sha256");
  const responseHash = str("response_sha256");
  if (!requestHash || !HEX64.test(requestHash)) return "darkbloom.request_sha256 is not 64 hex digits";
  if (!responseHash || !HEX64.test(responseHash)) return "darkbloom.response_sha256 is not 64 hex digits";
  const signingKey = nullable("signing_key");
  const signature = nullable("signature");
  if (signingKey === undefined) return "darkbloom.signing_key is missing";
  if (signature === undefined) return "darkbloom.signature is missing";
  return {
    provider_id: str("provider_id") ?? "",
    trust_level: str("trust_level") ?? "",
    signing_key: signingKey,
    request_sha256: requestHash,
    response_sha256: responseHash,
    signature,
  };
}
