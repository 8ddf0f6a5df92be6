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
 * This module is portable (no Node API: TextEncoder and DataView only), so a browser builds the same
 * record: verifiable-response.ts checks proofs with node:crypto, web-verify.ts with WebCrypto.
 */

import type { SignedLogprob } from "./logprobs.js";

/** The version of the response signature this code makes and checks. */
export const RESPONSE_SIGNATURE_VERSION = 3;
/** Domain separation: the attestation key signs other things (attestation blobs, challenges) too. */
export const RESPONSE_SIGNATURE_DOMAIN = "darkbloom-response-v3";
/** The versions a saved response may be signed with (2: before logprobs; same record). */
export const VERIFIED_RESPONSE_VERSIONS: readonly number[] = [2, RESPONSE_SIGNATURE_VERSION];

/** A P-256 public key's size as a SEC1 uncompressed point (0x04 ‖ X ‖ Y). */
export const P256_PUBLIC_KEY_BYTES = 65;

const utf8 = new TextEncoder();
/** The largest u32 of a record (counts, lengths, usage). */
export const U32_MAX = 0xffff_ffff;

/** The domain bytes (with the 0x00) of a response signature version this code verifies. */
export function responseDomain(version: number): Uint8Array {
  if (!VERIFIED_RESPONSE_VERSIONS.includes(version))
    throw new RangeError(`no response signature version ${version}`);
  return utf8.encode(`darkbloom-response-v${version}\0`);
}

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
  writeResponseRecord(response, (bytes) => parts.push(bytes));
  return concatBytes(parts);
}

/**
 * The writers of a signed record's fields: u32 (unsigned big-endian, refused outside its range),
 * str (a u32 byte length, then UTF-8) and f32 (IEEE-754 binary32, big-endian; refused unless the
 * number is one), each handing its bytes to `out`.
 */
export function recordWriter(out: (bytes: Uint8Array) => void): {
  u32: (value: number, what: string) => void;
  str: (value: string) => void;
  f32: (value: number, what: string) => void;
} {
  const u32 = (value: number, what: string) => {
    if (!Number.isInteger(value) || value < 0 || value > U32_MAX) {
      throw new Error(`${what} is not an integer in 0..${U32_MAX}`);
    }
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value, false);
    out(b);
  };
  const str = (value: string) => {
    const bytes = utf8.encode(value);
    u32(bytes.byteLength, "a string's length");
    out(bytes);
  };
  const f32 = (value: number, what: string) => {
    if (Math.fround(value) !== value) throw new Error(`${what} ${value} is not a binary32 value`);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, false);
    out(b);
  };
  return { u32, str, f32 };
}

/** Hands the response record's bytes to `out`, field by field (a hash can take them as they come). */
export function writeResponseRecord(r: SignedResponse, out: (bytes: Uint8Array) => void): void {
  const { u32, str, f32 } = recordWriter(out);
  const opt = (value: string | null) => {
    out(value === null ? ABSENT : PRESENT);
    if (value !== null) str(value);
  };
  const bytes = (value: Uint8Array) => {
    u32(value.byteLength, "a token's length");
    out(value);
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
      for (const entry of c.logprobs) {
        bytes(entry.token);
        f32(entry.logprob, "logprob");
        u32(entry.top.length, "the number of alternatives");
        for (const t of entry.top) {
          bytes(t.token);
          f32(t.logprob, "logprob");
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

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

export function hex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

/** The bytes of lowercase or uppercase hex; throws on anything else. */
export function fromHex(text: string): Uint8Array {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(text)) throw new Error("not hex");
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(text.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** The bytes of standard base64 (padding optional); throws on anything else. */
export function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((v, i) => v === b[i]);
}
