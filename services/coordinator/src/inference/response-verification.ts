import type { KeyObject } from "node:crypto";
import { p256PublicKeyFromRaw, trustLevelName } from "@darkbloom/protocol";
import type { ResponseSignature } from "@darkbloom/protocol/provider/v1";
import {
  EMBEDDINGS_SIGNATURE_VERSION,
  embeddingsSha256,
  verifyEmbeddingsSignature,
} from "@darkbloom/protocol/verifiable-embeddings";
import {
  hex,
  RESPONSE_SIGNATURE_VERSION,
  type ResponseProof,
  responseSha256,
  type SignedChoice,
  verifyResponseSignature,
} from "@darkbloom/protocol/verifiable-response";
import type { ProviderHandle } from "../routing/provider-handle.js";
import type { CompletionResult } from "./response-sink.js";

/** Trust reason codes for a provider whose InferenceComplete does not match what it was sent and sent. */
export const ResponseViolation = {
  /** The provider has a signing key but sent no response signature. */
  unsigned: "response_unsigned",
  /**
   * The signature is not the record's version (completions 3: a daemon that registered as signing
   * version 3 signed another; embeddings 1).
   */
  outdated: "response_signature_outdated",
  /** request_sha256 is not the hash of the request the coordinator sent. */
  requestHashMismatch: "request_hash_mismatch",
  /**
   * response_sha256 is not the hash of the response the coordinator will present: the text it
   * received, the finish reasons, the usage, the model and the provider id.
   */
  responseHashMismatch: "response_hash_mismatch",
  /** The signature does not verify with the provider's signing key. */
  badSignature: "response_signature_invalid",
} as const;

export type ResponseVerdict =
  | { ok: true; proof: ResponseProof }
  | { ok: false; code: string; message: string };

/**
 * Checks a provider's ResponseSignature against what the coordinator itself sent (the request body's
 * hash) and will present: the choices as shown (the text it received after opening the chunks, or
 * its content and tool calls; their finish reasons) and `result`'s usage, under `model` and the
 * provider's id. So what the consumer is shown is
 * exactly what the provider signed. The signature must verify with the provider's registered
 * signing key. The proof it returns is the consumer's `darkbloom` object. A provider without a
 * signing key gets an unsigned proof (signature and signing_key null); one that signs anyway must
 * still get both hashes right.
 */
export function verifyResponse(
  provider: ProviderHandle,
  signingKey: Uint8Array | undefined,
  requestSha256: Uint8Array,
  model: string,
  choices: readonly SignedChoice[],
  result: Omit<CompletionResult, "proof" | "choices">,
  signature: ResponseSignature | undefined,
): ResponseVerdict {
  const usage = { promptTokens: result.promptTokens, completionTokens: result.completionTokens };
  const responseHash = responseSha256({ providerId: provider.id, model, choices, usage });
  return verifySigned(provider, signingKey, requestSha256, responseHash, usage, signature, COMPLETIONS);
}

/**
 * The same checks for an embeddings response: the signature must cover the embeddings record of the
 * vectors the consumer is shown, in order, under `model` and the provider's id, with the prompt
 * tokens of the usage shown (services/protocol/src/verifiable-embeddings.ts).
 */
export function verifyEmbeddings(
  provider: ProviderHandle,
  signingKey: Uint8Array | undefined,
  requestSha256: Uint8Array,
  model: string,
  embeddings: readonly Float32Array[],
  promptTokens: number,
  signature: ResponseSignature | undefined,
): ResponseVerdict {
  const responseHash = embeddingsSha256({ providerId: provider.id, model, embeddings, promptTokens });
  return verifySigned(
    provider,
    signingKey,
    requestSha256,
    responseHash,
    { promptTokens, completionTokens: 0 },
    signature,
    EMBEDDINGS,
  );
}

/** A kind of signed record: its signature version and how its signature is checked. */
interface RecordKind {
  version: number;
  verify: typeof verifyResponseSignature;
  /** What the response hash covers, for the message of a mismatch. */
  covers: string;
}

const COMPLETIONS: RecordKind = {
  version: RESPONSE_SIGNATURE_VERSION,
  verify: verifyResponseSignature,
  covers: "text, finish reasons, usage, model, provider id",
};

const EMBEDDINGS: RecordKind = {
  version: EMBEDDINGS_SIGNATURE_VERSION,
  verify: verifyEmbeddingsSignature,
  covers: "embeddings, usage, model, provider id",
};

function verifySigned(
  provider: ProviderHandle,
  signingKey: Uint8Array | undefined,
  requestSha256: Uint8Array,
  responseHash: Uint8Array,
  usage: { promptTokens: number; completionTokens: number },
  signature: ResponseSignature | undefined,
  kind: RecordKind,
): ResponseVerdict {
  const proof: ResponseProof = {
    version: kind.version,
    provider_id: provider.id,
    trust_level: trustLevelName(provider.trustLevel),
    signing_key: null,
    request_sha256: hex(requestSha256),
    response_sha256: hex(responseHash),
    usage: { prompt_tokens: usage.promptTokens, completion_tokens: usage.completionTokens },
    signature: null,
  };
  if (!signature) {
    if (signingKey) {
      return { ok: false, code: ResponseViolation.unsigned, message: "the response carries no signature" };
    }
    return { ok: true, proof };
  }
  if (signature.version !== kind.version) {
    return {
      ok: false,
      code: ResponseViolation.outdated,
      message: `the response signature is version ${signature.version || 1}; version ${kind.version} is required`,
    };
  }
  if (!equal(signature.requestSha256, requestSha256)) {
    return {
      ok: false,
      code: ResponseViolation.requestHashMismatch,
      message: "request_sha256 is not the hash of the request the coordinator sent",
    };
  }
  if (!equal(signature.responseSha256, responseHash)) {
    return {
      ok: false,
      code: ResponseViolation.responseHashMismatch,
      message: `response_sha256 is not the hash of the response the coordinator presents (${kind.covers})`,
    };
  }
  if (!signingKey) return { ok: true, proof };
  if (!kind.verify(keyObject(signingKey), requestSha256, responseHash, signature.signature)) {
    return {
      ok: false,
      code: ResponseViolation.badSignature,
      message: "the response signature does not verify with the provider's signing key",
    };
  }
  proof.signing_key = base64(signingKey);
  proof.signature = base64(signature.signature);
  return { ok: true, proof };
}

/** Parsed signing keys, per session key: parsing costs twice the verification itself. */
const parsedKeys = new WeakMap<Uint8Array, KeyObject | Uint8Array>();

function keyObject(raw: Uint8Array): KeyObject | Uint8Array {
  let key = parsedKeys.get(raw);
  if (key === undefined) {
    try {
      key = p256PublicKeyFromRaw(raw);
    } catch {
      key = raw; // not a P-256 point: verification fails
    }
    parsedKeys.set(raw, key);
  }
  return key;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(a, b) === 0;
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}
