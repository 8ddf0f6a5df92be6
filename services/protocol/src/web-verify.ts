export { isPublishedKey, type PublishedKey, readPublishedKey } from "./published-key.js";
export type { ResponseProof, VerifyOptions, VerifyResult } from "./response-proof.js";
export { sseData } from "./saved-response.js";

import {
  NOT_ON_CURVE,
  type ProofFigures,
  type ProofInputs,
  responseCheck,
  responseVerdict,
  type VerifyOptions,
  type VerifyResult,
} from "./response-proof.js";

/**
 * Verifiable responses checked with WebCrypto: what the console's playground runs in the browser.
 * The rules are response-proof.ts's, the record response-record.ts's, exactly as `darkbloom verify`
 * runs them with node:crypto (verifiable-response.ts); only the figures are computed here. Portable:
 * no Node API, only `crypto.subtle`.
 */

/** The part of WebCrypto's SubtleCrypto this uses (a browser's `crypto.subtle`, or Node's). */
export interface Subtle<Key = unknown> {
  digest(algorithm: "SHA-256", data: Uint8Array<ArrayBuffer>): Promise<ArrayBuffer>;
  importKey(
    format: "raw",
    keyData: Uint8Array<ArrayBuffer>,
    algorithm: { name: "ECDSA"; namedCurve: "P-256" },
    extractable: false,
    keyUsages: "verify"[],
  ): Promise<Key>;
  verify(
    algorithm: { name: "ECDSA"; hash: "SHA-256" },
    key: Key,
    signature: Uint8Array<ArrayBuffer>,
    data: Uint8Array<ArrayBuffer>,
  ): Promise<boolean>;
}

/** Checks a saved completion (JSON body or SSE stream text) as verifyResponse does, with WebCrypto. */
export async function verifyResponseWeb<Key>(
  saved: unknown,
  options: VerifyOptions,
  subtle: Subtle<Key>,
): Promise<VerifyResult> {
  const check = responseCheck(saved, options);
  if (!check.ok) return check;
  return responseVerdict(check, options, await webProofFigures(check.inputs, subtle));
}

/** A proof's figures computed with WebCrypto (verifiable-response.ts's proofFigures with node:crypto). */
export async function webProofFigures<Key>(inputs: ProofInputs, subtle: Subtle<Key>): Promise<ProofFigures> {
  const digest = async (bytes: Uint8Array) => new Uint8Array(await subtle.digest("SHA-256", copy(bytes)));
  let signature: ProofFigures["signature"];
  if (inputs.signed !== undefined) {
    const { key, message, signature: der } = inputs.signed;
    if (!(key instanceof Uint8Array)) signature = key;
    else {
      let cryptoKey: Key | undefined;
      try {
        cryptoKey = await subtle.importKey("raw", copy(key), { name: "ECDSA", namedCurve: "P-256" }, false, [
          "verify",
        ]);
      } catch {
        signature = { unusable: NOT_ON_CURVE };
      }
      if (cryptoKey !== undefined) {
        // WebCrypto takes r ‖ s; the wire carries DER, whose strict reading is part of the check.
        const raw = derToP1363(der);
        signature =
          raw !== undefined &&
          (await subtle.verify({ name: "ECDSA", hash: "SHA-256" }, cryptoKey, raw, copy(message)));
      }
    }
  }
  return {
    recordSha256: inputs.record instanceof Uint8Array ? await digest(inputs.record) : undefined,
    requestSha256: inputs.requestBody === undefined ? undefined : await digest(inputs.requestBody),
    signature,
  };
}

/**
 * An ECDSA P-256 signature in DER (SEQUENCE of two INTEGERs) as the 64 bytes r ‖ s, or undefined
 * when it is not strict DER: what OpenSSL (node:crypto) refuses, this refuses too, so the browser
 * and `darkbloom verify` accept the same signatures.
 */
export function derToP1363(der: Uint8Array): Uint8Array<ArrayBuffer> | undefined {
  if (der.byteLength < 8 || der[0] !== 0x30 || der[1] !== der.byteLength - 2 || (der[1] as number) >= 0x80) {
    return undefined;
  }
  const out = new Uint8Array(64);
  let at = 2;
  for (const half of [0, 1]) {
    if (der[at] !== 0x02) return undefined;
    const length = der[at + 1] as number;
    const start = at + 2;
    if (length < 1 || length > 33 || start + length > der.byteLength) return undefined;
    let value = der.subarray(start, start + length);
    if ((value[0] as number) & 0x80) return undefined; // negative
    if (value[0] === 0 && length > 1) {
      if (!((value[1] as number) & 0x80)) return undefined; // not minimal
      value = value.subarray(1);
    }
    if (value.byteLength > 32) return undefined;
    out.set(value, half * 32 + 32 - value.byteLength);
    at = start + length;
  }
  return at === der.byteLength ? out : undefined;
}

/** A copy on its own ArrayBuffer (what WebCrypto's types ask for; the input may be a view). */
function copy(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes);
}
