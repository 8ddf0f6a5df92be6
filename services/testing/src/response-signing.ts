import { createHash, generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import type { ResponseSignatureInit } from "@darkbloom/protocol/provider-client";
import {
  RESPONSE_SIGNATURE_VERSION,
  responseSha256,
  responseSignatureMessage,
  type SignedResponse,
  sha256,
} from "@darkbloom/protocol/verifiable-response";

/**
 * How a misbehaving scripted provider forges its response signature: hash another request body,
 * hash a tampered text, sign another usage, finish reason, model or provider id than the ones it
 * sends, sign with another key than the registered one, or sign version 1 (the texts only, as
 * daemons before version 2 did).
 */
export type ForgedSignature =
  | "request_hash"
  | "response_hash"
  | "usage"
  | "finish_reason"
  | "model"
  | "provider_id"
  | "other_key"
  | "v1";

/** InferenceComplete.signature for `response` (what the provider sent), forged as asked. */
export function signResponse(
  key: KeyObject,
  forge: ForgedSignature | undefined,
  requestSha256: Uint8Array,
  response: SignedResponse,
): ResponseSignatureInit {
  const signed: SignedResponse = {
    providerId: forge === "provider_id" ? "prov_someone_else" : response.providerId,
    model: forge === "model" ? `${response.model}!` : response.model,
    choices: response.choices.map((c) => ({
      ...c,
      content: forge === "response_hash" ? `${c.content}!` : c.content,
      finishReason: forge === "finish_reason" ? `${c.finishReason}!` : c.finishReason,
    })),
    usage: {
      promptTokens: response.usage.promptTokens,
      completionTokens: response.usage.completionTokens + (forge === "usage" ? 1 : 0),
    },
  };
  const requestHash = forge === "request_hash" ? sha256(new TextEncoder().encode("{}")) : requestSha256;
  const signer = forge === "other_key" ? otherSigningKey() : key;
  if (forge === "v1") {
    const responseHash = v1ResponseSha256(signed.choices.map((c) => c.content ?? ""));
    const message = Buffer.concat([
      Buffer.from("darkbloom-response-v1\0", "latin1"),
      requestHash,
      responseHash,
    ]);
    return {
      requestSha256: requestHash,
      responseSha256: responseHash,
      signature: sign("sha256", message, signer),
    };
  }
  const responseHash = responseSha256(signed);
  return {
    requestSha256: requestHash,
    responseSha256: responseHash,
    signature: sign("sha256", responseSignatureMessage(requestHash, responseHash), signer),
    version: RESPONSE_SIGNATURE_VERSION,
  };
}

/** Version 1's response hash: each text length-prefixed, nothing else (what old daemons signed). */
function v1ResponseSha256(texts: readonly string[]): Uint8Array {
  const hash = createHash("sha256");
  for (const t of texts) {
    const bytes = Buffer.from(t, "utf8");
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.byteLength, 0);
    hash.update(length).update(bytes);
  }
  return new Uint8Array(hash.digest());
}

let strayKey: KeyObject | undefined;
/** A P-256 key nobody registered (forged signatures). */
function otherSigningKey(): KeyObject {
  strayKey ??= generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
  return strayKey;
}
