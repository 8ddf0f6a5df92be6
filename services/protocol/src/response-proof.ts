import {
  domainSignatureMessage,
  fromBase64,
  fromHex,
  hex,
  P256_PUBLIC_KEY_BYTES,
  RESPONSE_SIGNATURE_VERSION,
  responseDomain,
  responseRecord,
  type SignedResponse,
  sameBytes,
  U32_MAX,
  VERIFIED_RESPONSE_VERSIONS,
} from "./response-record.js";
import { readSavedResponse, type SavedResponse, sameUsage } from "./saved-response.js";

/**
 * What checking a response's proof is, apart from the cryptography: reading the `darkbloom` object,
 * reading back what it signs, and judging the figures a crypto implementation computed
 * (verifiable-response.ts with node:crypto, web-verify.ts with WebCrypto). One copy of every rule, so
 * `darkbloom verify` and the console's playground cannot disagree about a response. Portable: no
 * Node API.
 */

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
  /** Lowercase hex SHA-256 of the response record (see response-record.ts). */
  response_sha256: string;
  /** The usage signed: what a stream without a usage chunk is checked with. */
  usage: { prompt_tokens: number; completion_tokens: number };
  /** Base64 ECDSA P-256 signature (DER) over the record kind's signed message; null when unsigned. */
  signature: string | null;
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

/** Why a 65-byte key that starts 0x04 is unusable (the crypto implementations both say this). */
export const NOT_ON_CURVE = "it is not a point on P-256";

/** What a crypto implementation is asked to compute for one proof (see proofInputs). */
export interface ProofInputs {
  /** The record to hash, or why it cannot be encoded. */
  record: Uint8Array | { unencodable: string };
  /** The request body to hash, when the caller gave one. */
  requestBody: Uint8Array | undefined;
  /** The signature to check: absent when the proof carries no key or no signature. */
  signed: { key: Uint8Array | { unusable: string }; message: Uint8Array; signature: Uint8Array } | undefined;
}

/** What the crypto implementation computed from ProofInputs. */
export interface ProofFigures {
  /** SHA-256 of the record (absent when it cannot be encoded). */
  recordSha256: Uint8Array | undefined;
  /** SHA-256 of the request body, when one was given. */
  requestSha256: Uint8Array | undefined;
  /** Whether the signature verifies with the key, or why the key is unusable; absent when unsigned. */
  signature: boolean | { unusable: string } | undefined;
}

/**
 * The inputs of a proof's check: `record` builds its record's bytes, `message` its kind's signed
 * message (its domain, then the two hashes). The message is built from the proof's own hashes:
 * judgeProof compares them with the computed ones, so a signature over other hashes proves nothing
 * about this response.
 */
export function proofInputs(
  proof: ResponseProof,
  options: VerifyOptions,
  record: () => Uint8Array,
  message: (requestSha256: Uint8Array, responseSha256: Uint8Array) => Uint8Array,
): ProofInputs {
  let bytes: ProofInputs["record"];
  try {
    bytes = record();
  } catch (e) {
    bytes = { unencodable: (e as Error).message };
  }
  const requestBody =
    typeof options.requestBody === "string"
      ? new TextEncoder().encode(options.requestBody)
      : options.requestBody;
  let signed: ProofInputs["signed"];
  if (proof.signature !== null && proof.signing_key !== null) {
    let key: Uint8Array | { unusable: string };
    let signature: Uint8Array;
    try {
      key = fromBase64(proof.signing_key);
      if (key.byteLength !== P256_PUBLIC_KEY_BYTES || key[0] !== 0x04) {
        key = { unusable: `a P-256 public key is 65 bytes starting 0x04, got ${key.byteLength} bytes` };
      }
    } catch {
      key = { unusable: "it is not base64" };
    }
    try {
      signature = fromBase64(proof.signature);
    } catch {
      signature = new Uint8Array(0);
    }
    signed = {
      key,
      message: message(fromHex(proof.request_sha256), fromHex(proof.response_sha256)),
      signature,
    };
  }
  return { record: bytes, requestBody, signed };
}

/**
 * The verdict on a proof, in the order a reader wants the reason: the record's hash against
 * response_sha256 (`covers`: what the record holds), the request body's hash, whether it is signed,
 * the key, the signature, and the pinned key. Undefined when all hold.
 */
export function judgeProof(
  proof: ResponseProof,
  options: VerifyOptions,
  inputs: ProofInputs,
  figures: ProofFigures,
  covers: string,
): string | undefined {
  if (!(inputs.record instanceof Uint8Array)) {
    return `the response cannot be encoded: ${inputs.record.unencodable}`;
  }
  const computed = hex(figures.recordSha256 ?? new Uint8Array(0));
  if (computed !== proof.response_sha256) {
    return `response_sha256 does not match the response (${covers}; computed ${computed})`;
  }
  if (figures.requestSha256 !== undefined) {
    const requestHash = hex(figures.requestSha256);
    if (requestHash !== proof.request_sha256) {
      return `request_sha256 does not match the request body (computed ${requestHash})`;
    }
  }
  if (inputs.signed === undefined || figures.signature === undefined) {
    return "the response is not signed (its provider has no signing key)";
  }
  if (typeof figures.signature === "object")
    return `signing_key is not usable: ${figures.signature.unusable}`;
  if (!figures.signature) return "the signature does not verify with signing_key";
  if (options.signingKey !== undefined) {
    let pinned: Uint8Array;
    try {
      pinned = fromBase64(options.signingKey);
    } catch {
      return "the pinned key is not base64";
    }
    if (!(inputs.signed.key instanceof Uint8Array) || !sameBytes(inputs.signed.key, pinned)) {
      return "the response is signed with another key than the pinned one";
    }
  }
  return undefined;
}

/** A completion's proof and what it signs, read from a saved response; or why it cannot be checked. */
export type ResponseCheck =
  | { ok: true; proof: ResponseProof; response: SignedResponse; inputs: ProofInputs }
  | { ok: false; reason: string; proof?: ResponseProof | undefined };

/** What `covers` says for a completion's record. */
export const RESPONSE_COVERS = "its choices, model, usage and provider_id";

/**
 * Reads a saved completion (a non-streaming body, parsed or its text, or the text of a saved SSE
 * stream) and its proof, and what its check needs computed. Everything signed is read from the
 * response itself (saved-response.ts says how), so any changed character of a choice, the model, the
 * usage or the provider id fails the response hash; the key is only ever compared with
 * `options.signingKey`, never believed because the response carries it.
 */
export function responseCheck(saved: unknown, options: VerifyOptions): ResponseCheck {
  let read: SavedResponse;
  try {
    read = readSavedResponse(saved);
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  const proof = readProof(read.proof, VERIFIED_RESPONSE_VERSIONS);
  if (typeof proof === "string") return { ok: false, reason: proof };
  const fail = (reason: string): ResponseCheck => ({ ok: false, reason, proof });
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
  const domain = responseDomain(proof.version);
  const inputs = proofInputs(
    proof,
    options,
    () => responseRecord(response),
    (request, responseHash) => domainSignatureMessage(domain, request, responseHash),
  );
  return { ok: true, proof, response, inputs };
}

/** The verdict on a completion whose figures were computed (see responseCheck). */
export function responseVerdict(
  check: Extract<ResponseCheck, { ok: true }>,
  options: VerifyOptions,
  figures: ProofFigures,
): VerifyResult {
  const reason = judgeProof(check.proof, options, check.inputs, figures, RESPONSE_COVERS);
  return reason === undefined
    ? { ok: true, pinned: options.signingKey !== undefined, proof: check.proof, response: check.response }
    : { ok: false, reason, proof: check.proof };
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
