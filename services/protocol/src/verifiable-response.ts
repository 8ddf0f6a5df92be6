import { createHash, type KeyObject, verify as verifySignature } from "node:crypto";
import type { SignedLogprob } from "./logprobs.js";
import { p256PublicKeyFromRaw } from "./p256.js";
import { readSavedResponse, type SavedResponse, sameUsage } from "./saved-response.js";

/**
 * Verifiable responses, version 3 (docs/ARCHITECTURE.md, "Verifiable responses"). The provider signs,
 * with its attestation key (ECDSA P-256, SHA-256, DER), the 86-byte message
 *
 *   offset  size  content
 *   0       22    ASCII "darkbloom-response-v3" followed by one 0x00 byte (domain separation from
 *                 the attestation blob, the challenge answers, and other versions' signatures)
 *   22      32    request_sha256: SHA-256 of the request body exactly as the consumer sent it
 *   54      32    response_sha256: SHA-256 of the response record below
 *
 * The response record is everything the consumer is shown that the provider produced. Integers are
 * unsigned big-endian; str is a u32 byte length then that many bytes of UTF-8; opt is 0x00 for null,
 * or 0x01 followed by a str:
 *
 *   str  provider_id         the provider id of the session (RegisterAck.provider_id)
 *   str  model               the response's `model` (InferenceRequest.model)
 *   u32  n                   number of choices
 *   n times, in index order 0..n-1:
 *     u32  index             the choice's index (equal to its position)
 *     opt  content           message.content (chat) or text (completions); null for a message
 *                            that only calls functions
 *     opt  refusal           message.refusal
 *     u32  k                 number of tool calls, then k times: str id, str type, str function.name,
 *                            str function.arguments (message.tool_calls, in order)
 *     u8   logprobs          0x00: none; 0x01: the content's tokens (logprobs.ts), then
 *          u32  m           number of tokens, then m times:
 *            bytes token    u32 length, then the token's bytes as the text shows them
 *            f32  logprob   IEEE-754 binary32, big-endian
 *            u32  t         number of alternatives, then t times: bytes token, f32 logprob
 *     str  finish_reason
 *   u32  prompt_tokens       usage as the provider reports it in InferenceComplete
 *   u32  completion_tokens
 *
 * Example: provider "prov_1", model "m", one choice "hi" (no refusal, no tool calls) that stopped,
 * 3 prompt and 1 completion tokens: 00000006 70726f765f31 00000001 6d 00000001 00000000 01 00000002
 * 6869 00 00000000 00 00000004 73746f70 00000003 00000001. Every field is length-prefixed or fixed
 * size, so two different responses never share a record.
 *
 * Version 2 is the same record and message with the domain "darkbloom-response-v2", from before
 * logprobs were served (its logprobs byte is always 0x00): responses saved then still verify.
 *
 * Not signed: the trust level (the coordinator's judgement, published by GET /v1/providers/attestation),
 * the signing key itself (a key proves who signed only once pinned: compared with the key the
 * coordinator publishes for the provider id, or one the consumer holds), and the response's id and
 * timestamps (the coordinator's).
 *
 * This module only needs node:crypto, so a consumer can use it without the rest of Darkbloom.
 */

/** The version of the response signature this code makes and checks. */
export const RESPONSE_SIGNATURE_VERSION = 3;
/** Domain separation: the attestation key signs other things (attestation blobs, challenges) too. */
export const RESPONSE_SIGNATURE_DOMAIN = "darkbloom-response-v3";
/** The versions a saved response may be signed with (2: before logprobs; same record). */
const VERIFIED_VERSIONS = [2, RESPONSE_SIGNATURE_VERSION] as const;

const DOMAINS = new Map(
  VERIFIED_VERSIONS.map((v) => [v as number, new TextEncoder().encode(`darkbloom-response-v${v}\0`)]),
);
const DOMAIN_BYTES = DOMAINS.get(RESPONSE_SIGNATURE_VERSION)!;
const utf8 = new TextEncoder();
const U32_MAX = 0xffff_ffff;

/** One tool call of a choice, as OpenAI's API shows it (`{id, type, function: {name, arguments}}`). */
export interface SignedToolCall {
  id: string;
  type: string;
  name: string;
  arguments: string;
}

export interface SignedChoice {
  index: number;
  content: string | null;
  refusal: string | null;
  toolCalls: readonly SignedToolCall[];
  /** The content's tokens with their log-probabilities (a request that asked); absent or null: none. */
  logprobs?: readonly SignedLogprob[] | null | undefined;
  finishReason: string;
}

export interface SignedUsage {
  promptTokens: number;
  completionTokens: number;
}

/** Everything a response signature covers besides the request hash. */
export interface SignedResponse {
  providerId: string;
  model: string;
  choices: readonly SignedChoice[];
  usage: SignedUsage;
}

/** The `darkbloom` object on a response, as the consumer receives it. */
export interface ResponseProof {
  /** The response signature version: 2. */
  version: number;
  provider_id: string;
  /** "none", "self_signed", "tpm" or "hardware" at the time the response was served (not signed). */
  trust_level: string;
  /** Base64 of the provider's P-256 public key (SEC1 uncompressed point); null when it has none. */
  signing_key: string | null;
  /** Lowercase hex SHA-256 of the request body bytes. */
  request_sha256: string;
  /** Lowercase hex SHA-256 of the response record (see responseRecord). */
  response_sha256: string;
  /** The usage signed: what a stream without a usage chunk is checked with. */
  usage: { prompt_tokens: number; completion_tokens: number };
  /** Base64 ECDSA P-256 signature (DER) over responseSignatureMessage; null when unsigned. */
  signature: string | null;
}

/** The choices of a text-only response (no refusal, no tool calls). */
export function textChoices(texts: readonly string[], finishReasons: readonly string[]): SignedChoice[] {
  return texts.map((content, index) => shownChoice(index, content, [], finishReasons[index] ?? ""));
}

/**
 * A choice as it is shown: its content (with tool calls, the text before them; null when there is
 * none, as OpenAI shows a message that only calls functions) and its calls.
 */
export function shownChoice(
  index: number,
  content: string,
  toolCalls: readonly SignedToolCall[],
  finishReason: string,
): SignedChoice {
  return {
    index,
    content: toolCalls.length > 0 && content === "" ? null : content,
    refusal: null,
    toolCalls,
    finishReason,
  };
}

/** The response record's bytes (see the module comment). Throws on a response it cannot encode. */
export function responseRecord(response: SignedResponse): Uint8Array {
  const parts: Uint8Array[] = [];
  encodeRecord(response, (bytes) => parts.push(bytes));
  return Buffer.concat(parts);
}

/** SHA-256 of the response record, fed field by field (without building the whole buffer). */
export function responseSha256(response: SignedResponse): Uint8Array {
  const hash = createHash("sha256");
  encodeRecord(response, (bytes) => hash.update(bytes));
  return new Uint8Array(hash.digest());
}

/**
 * The writers of a signed record's fields: u32 (unsigned big-endian, refused outside its range) and
 * str (a u32 byte length, then UTF-8), each handing its bytes to `out`.
 */
export function recordWriter(out: (bytes: Uint8Array) => void): {
  u32: (value: number, what: string) => void;
  str: (value: string) => void;
} {
  const u32 = (value: number, what: string) => {
    if (!Number.isInteger(value) || value < 0 || value > U32_MAX) {
      throw new Error(`${what} is not an integer in 0..${U32_MAX}`);
    }
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32BE(value, 0);
    out(b);
  };
  const str = (value: string) => {
    const bytes = Buffer.from(value, "utf8");
    u32(bytes.byteLength, "a string's length");
    out(bytes);
  };
  return { u32, str };
}

function encodeRecord(r: SignedResponse, out: (bytes: Uint8Array) => void): void {
  const { u32, str } = recordWriter(out);
  const opt = (value: string | null) => {
    out(value === null ? ABSENT : PRESENT);
    if (value !== null) str(value);
  };
  str(r.providerId);
  str(r.model);
  u32(r.choices.length, "the number of choices");
  for (const [position, c] of r.choices.entries()) {
    if (c.index !== position) throw new Error(`choice ${position} has index ${c.index}`);
    u32(c.index, "a choice index");
    opt(c.content);
    opt(c.refusal);
    u32(c.toolCalls.length, "the number of tool calls");
    for (const call of c.toolCalls) {
      str(call.id);
      str(call.type);
      str(call.name);
      str(call.arguments);
    }
    if (c.logprobs === undefined || c.logprobs === null) out(ABSENT);
    else {
      out(PRESENT);
      u32(c.logprobs.length, "the number of logprobs");
      const bytes = (value: Uint8Array) => {
        u32(value.byteLength, "a token's length");
        out(value);
      };
      const f32 = (value: number) => {
        const b = Buffer.allocUnsafe(4);
        b.writeFloatBE(value, 0);
        if (b.readFloatBE(0) !== value) throw new Error(`logprob ${value} is not a binary32 value`);
        out(b);
      };
      for (const entry of c.logprobs) {
        bytes(entry.token);
        f32(entry.logprob);
        u32(entry.top.length, "the number of alternatives");
        for (const t of entry.top) {
          bytes(t.token);
          f32(t.logprob);
        }
      }
    }
    str(c.finishReason);
  }
  u32(r.usage.promptTokens, "usage.prompt_tokens");
  u32(r.usage.completionTokens, "usage.completion_tokens");
}

const ABSENT = new Uint8Array([0]);
const PRESENT = new Uint8Array([1]);

export function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(bytes).digest());
}

/** The exact bytes the provider signs. */
export function responseSignatureMessage(requestSha256: Uint8Array, responseSha256: Uint8Array): Uint8Array {
  return domainSignatureMessage(DOMAIN_BYTES, requestSha256, responseSha256);
}

/** Whether `signature` (DER) is the key's signature of the two hashes. Never throws. */
export function verifyResponseSignature(
  signingKey: Uint8Array | KeyObject,
  requestSha256: Uint8Array,
  responseSha256: Uint8Array,
  signature: Uint8Array,
): boolean {
  return verifyDomainSignature(
    responseSignatureMessage,
    signingKey,
    requestSha256,
    responseSha256,
    signature,
  );
}

/** A record kind's signed message: its domain (with the 0x00), request_sha256, response_sha256. */
export function domainSignatureMessage(
  domain: Uint8Array,
  requestSha256: Uint8Array,
  responseSha256: Uint8Array,
): Uint8Array {
  if (requestSha256.byteLength !== 32 || responseSha256.byteLength !== 32) {
    throw new Error("request_sha256 and response_sha256 must be 32 bytes each");
  }
  const out = new Uint8Array(domain.byteLength + 64);
  out.set(domain, 0);
  out.set(requestSha256, domain.byteLength);
  out.set(responseSha256, domain.byteLength + 32);
  return out;
}

/** Whether `signature` (DER) is the key's signature of `message(request, response)`. Never throws. */
export function verifyDomainSignature(
  message: (requestSha256: Uint8Array, responseSha256: Uint8Array) => Uint8Array,
  signingKey: Uint8Array | KeyObject,
  requestSha256: Uint8Array,
  responseSha256: Uint8Array,
  signature: Uint8Array,
): boolean {
  try {
    const key = signingKey instanceof Uint8Array ? p256PublicKeyFromRaw(signingKey) : signingKey;
    return verifySignature("sha256", message(requestSha256, responseSha256), key, signature);
  } catch {
    return false;
  }
}

export interface VerifyOptions {
  /** The request body exactly as sent; when given, request_sha256 must be its hash. */
  requestBody?: Uint8Array | string | undefined;
  /**
   * Base64 SEC1 key the response must be signed with: the key GET /v1/providers/attestation
   * publishes for the proof's provider_id, or one the consumer holds. Without it the result is
   * valid at best, never pinned: anyone can sign a response with a key of their own.
   */
  signingKey?: string | undefined;
}

export type VerifyResult =
  | { ok: true; pinned: boolean; proof: ResponseProof; response: SignedResponse }
  | { ok: false; reason: string; proof?: ResponseProof | undefined };

/**
 * Checks a saved response: a non-streaming chat or text completion body (parsed JSON or its text),
 * or the text of a saved SSE stream (`data: …` events up to `data: [DONE]`). Everything signed is
 * read from the response itself (see saved-response.ts for the rules), so any changed character of
 * a choice, the model, the usage or the provider id fails the response hash; the key is only ever
 * compared with `options.signingKey`, never believed because the response carries it.
 */
export function verifyResponse(saved: unknown, options: VerifyOptions = {}): VerifyResult {
  let read: SavedResponse;
  try {
    read = readSavedResponse(saved);
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  const proof = readProof(read.proof, VERIFIED_VERSIONS);
  if (typeof proof === "string") return { ok: false, reason: proof };
  const fail = (reason: string): VerifyResult => ({ ok: false, reason, proof });
  if (proof.version < 3 && read.choices.some((c) => c.logprobs)) {
    return fail(`the response carries logprobs, which a version ${proof.version} signature does not cover`);
  }
  const signedUsage = {
    promptTokens: proof.usage.prompt_tokens,
    completionTokens: proof.usage.completion_tokens,
  };
  const differing = read.usages.find((u) => !sameUsage(u, signedUsage));
  if (differing) {
    return fail(
      `the response's usage (${differing.promptTokens} prompt, ${differing.completionTokens} completion ` +
        `tokens) is not the usage signed (${signedUsage.promptTokens}, ${signedUsage.completionTokens})`,
    );
  }
  const response: SignedResponse = {
    providerId: proof.provider_id,
    model: read.model,
    choices: read.choices,
    usage: signedUsage,
  };
  const checked = checkProof(proof, options, {
    sha256: () => responseSha256(response),
    covers: "its choices, model, usage and provider_id",
    verify: (key, requestSha256, responseSha256, signature) =>
      verifyDomainSignature(
        (request, response) => domainSignatureMessage(DOMAINS.get(proof.version)!, request, response),
        key,
        requestSha256,
        responseSha256,
        signature,
      ),
  });
  return checked === undefined
    ? { ok: true, pinned: options.signingKey !== undefined, proof, response }
    : fail(checked);
}

/**
 * What every proof's check is once the response was read: its record's hash (`record.sha256`, what
 * `covers` says it covers) against response_sha256, the request body's hash (when given), the
 * signature with the proof's key (`record.verify`: the record kind's signature check), and the
 * pinned key. The reason it fails, or undefined.
 */
export function checkProof(
  proof: ResponseProof,
  options: VerifyOptions,
  record: {
    sha256: () => Uint8Array;
    covers: string;
    verify: (
      key: KeyObject,
      requestSha256: Uint8Array,
      responseSha256: Uint8Array,
      signature: Uint8Array,
    ) => boolean;
  },
): string | undefined {
  let computed: string;
  try {
    computed = hex(record.sha256());
  } catch (e) {
    return `the response cannot be encoded: ${(e as Error).message}`;
  }
  if (computed !== proof.response_sha256) {
    return `response_sha256 does not match the response (${record.covers}; computed ${computed})`;
  }
  if (options.requestBody !== undefined) {
    const body =
      typeof options.requestBody === "string" ? utf8.encode(options.requestBody) : options.requestBody;
    const requestHash = hex(sha256(body));
    if (requestHash !== proof.request_sha256) {
      return `request_sha256 does not match the request body (computed ${requestHash})`;
    }
  }
  if (proof.signature === null || proof.signing_key === null) {
    return "the response is not signed (its provider has no signing key)";
  }
  const signingKey = Buffer.from(proof.signing_key, "base64");
  let key: KeyObject;
  try {
    key = p256PublicKeyFromRaw(signingKey);
  } catch (e) {
    return `signing_key is not usable: ${(e as Error).message}`;
  }
  const valid = record.verify(
    key,
    Buffer.from(proof.request_sha256, "hex"),
    Buffer.from(proof.response_sha256, "hex"),
    Buffer.from(proof.signature, "base64"),
  );
  if (!valid) return "the signature does not verify with signing_key";
  if (options.signingKey !== undefined && !signingKey.equals(Buffer.from(options.signingKey, "base64"))) {
    return "the response is signed with another key than the pinned one";
  }
  return undefined;
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * The `darkbloom` object of a saved response, checked for shape, or the reason it is unusable.
 * `versions`: those the response's kind may be signed with (completions 2 and 3, embeddings 1).
 */
export function readProof(value: unknown, versions: number | readonly number[]): ResponseProof | string {
  if (value === undefined || value === null) return "the response has no darkbloom object";
  if (typeof value !== "object" || Array.isArray(value)) return "the darkbloom field is not an object";
  const o = value as Record<string, unknown>;
  const accepted: readonly number[] = typeof versions === "number" ? [versions] : versions;
  if (typeof o.version !== "number" || !accepted.includes(o.version)) {
    if (o.version === undefined) {
      return accepted.includes(RESPONSE_SIGNATURE_VERSION)
        ? "darkbloom.version is missing: a version 1 proof signs only the choice texts, which proves too little"
        : "darkbloom.version is missing";
    }
    return `darkbloom.version is ${JSON.stringify(o.version)}; this verifier checks version ${accepted.join(" or ")}`;
  }
  const version = o.version;
  const str = (k: string) => (typeof o[k] === "string" ? (o[k] as string) : undefined);
  const nullable = (k: string) => (o[k] === null ? null : str(k));
  const providerId = str("provider_id");
  const requestHash = str("request_sha256");
  const responseHash = str("response_sha256");
  if (!providerId) return "darkbloom.provider_id is missing";
  if (!requestHash || !HEX64.test(requestHash)) return "darkbloom.request_sha256 is not 64 hex digits";
  if (!responseHash || !HEX64.test(responseHash)) return "darkbloom.response_sha256 is not 64 hex digits";
  const signingKey = nullable("signing_key");
  const signature = nullable("signature");
  if (signingKey === undefined) return "darkbloom.signing_key is missing";
  if (signature === undefined) return "darkbloom.signature is missing";
  const usage = o.usage as Record<string, unknown> | null | undefined;
  const tokens = (k: string) => {
    const v = usage?.[k];
    return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= U32_MAX ? v : undefined;
  };
  const promptTokens = tokens("prompt_tokens");
  const completionTokens = tokens("completion_tokens");
  if (promptTokens === undefined || completionTokens === undefined) {
    return "darkbloom.usage does not hold prompt_tokens and completion_tokens";
  }
  return {
    version,
    provider_id: providerId,
    trust_level: str("trust_level") ?? "",
    signing_key: signingKey,
    request_sha256: requestHash,
    response_sha256: responseHash,
    usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens },
    signature,
  };
}
