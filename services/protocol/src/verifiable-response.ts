import { createHash, type KeyObject, verify as verifySignature } from "node:crypto";
import { p256PublicKeyFromRaw } from "./p256.js";
import {
  judgeProof,
  NOT_ON_CURVE,
  type ProofFigures,
  type ProofInputs,
  type ResponseProof,
  responseCheck,
  responseVerdict,
  type VerifyOptions,
  type VerifyResult,
} from "./response-proof.js";
import {
  domainSignatureMessage,
  RESPONSE_SIGNATURE_VERSION,
  responseDomain,
  type SignedResponse,
  writeResponseRecord,
} from "./response-record.js";

/**
 * Verifiable responses with node:crypto: what providers sign with and `darkbloom verify` checks
 * with. The record and its rules are portable (response-record.ts: the record and the message;
 * response-proof.ts: reading a proof and judging it), so the console checks responses in a browser
 * with the same code (web-verify.ts); this module adds Node's SHA-256 and ECDSA.
 */

export { isPublishedKey, type PublishedKey, readPublishedKey } from "./published-key.js";
export {
  judgeProof,
  type ProofFigures,
  type ProofInputs,
  proofInputs,
  type ResponseProof,
  readProof,
  type VerifyOptions,
  type VerifyResult,
} from "./response-proof.js";
export {
  concatBytes,
  domainSignatureMessage,
  fromBase64,
  fromHex,
  hex,
  RESPONSE_SIGNATURE_DOMAIN,
  RESPONSE_SIGNATURE_VERSION,
  recordWriter,
  responseRecord,
  type SignedChoice,
  type SignedResponse,
  type SignedToolCall,
  type SignedUsage,
  shownChoice,
  textChoices,
} from "./response-record.js";

const DOMAIN_BYTES = responseDomain(RESPONSE_SIGNATURE_VERSION);

/** SHA-256 of the response record, fed field by field (without building the whole buffer). */
export function responseSha256(response: SignedResponse): Uint8Array {
  const hash = createHash("sha256");
  writeResponseRecord(response, (bytes) => hash.update(bytes));
  return new Uint8Array(hash.digest());
}

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

/**
 * Checks a saved response: a non-streaming chat or text completion body (parsed JSON or its text),
 * or the text of a saved SSE stream (`data: …` events up to `data: [DONE]`). response-proof.ts has
 * the rules; this computes the hashes and the signature check with node:crypto.
 */
export function verifyResponse(saved: unknown, options: VerifyOptions = {}): VerifyResult {
  const check = responseCheck(saved, options);
  if (!check.ok) return check;
  return responseVerdict(check, options, proofFigures(check.inputs));
}

/** A proof's figures computed with node:crypto (web-verify.ts computes the same with WebCrypto). */
export function proofFigures(inputs: ProofInputs): ProofFigures {
  let signature: ProofFigures["signature"];
  if (inputs.signed !== undefined) {
    const { key, message, signature: der } = inputs.signed;
    if (!(key instanceof Uint8Array)) signature = key;
    else {
      let keyObject: KeyObject | undefined;
      try {
        keyObject = p256PublicKeyFromRaw(key);
      } catch {
        // The size and the 0x04 were checked (proofInputs): what is left is the curve equation.
        signature = { unusable: NOT_ON_CURVE };
      }
      if (keyObject !== undefined) {
        try {
          signature = verifySignature("sha256", message, keyObject, der);
        } catch {
          signature = false;
        }
      }
    }
  }
  return {
    recordSha256: inputs.record instanceof Uint8Array ? sha256(inputs.record) : undefined,
    requestSha256: inputs.requestBody === undefined ? undefined : sha256(inputs.requestBody),
    signature,
  };
}

/** Checks a proof whose record `inputs` were made for (another record kind's verifier: embeddings). */
export function checkProof(
  proof: ResponseProof,
  options: VerifyOptions,
  inputs: ProofInputs,
  covers: string,
): string | undefined {
  return judgeProof(proof, options, inputs, proofFigures(inputs), covers);
}
