import { createPublicKey, type KeyObject, verify } from "node:crypto";
import { P256_PUBLIC_KEY_BYTES } from "./response-record.js";

export { P256_PUBLIC_KEY_BYTES };

/**
 * P-256 public keys travel as SEC1 uncompressed points (65 bytes: 0x04 ‖ X ‖ Y) and signatures as
 * DER-encoded ECDSA over SHA-256. These helpers convert between that form and Node's KeyObject.
 */

/** The DER prefix that turns a 65-byte uncompressed P-256 point into a SubjectPublicKeyInfo. */
const SPKI_PREFIX = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex");

/** A KeyObject for a SEC1 uncompressed P-256 point; throws when it is not a point on the curve. */
export function p256PublicKeyFromRaw(raw: Uint8Array): KeyObject {
  if (raw.length !== P256_PUBLIC_KEY_BYTES || raw[0] !== 0x04) {
    throw new RangeError(`a P-256 public key is 65 bytes starting 0x04, got ${raw.length} bytes`);
  }
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: "der", type: "spki" });
}

/** The SEC1 uncompressed point of a P-256 key (public, or the public half of a private key). */
export function rawP256PublicKey(key: KeyObject): Uint8Array {
  const pub = key.type === "private" ? createPublicKey(key) : key;
  if (pub.asymmetricKeyType !== "ec" || pub.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw new TypeError("not a P-256 key");
  }
  const der = pub.export({ format: "der", type: "spki" });
  return new Uint8Array(der.subarray(der.length - P256_PUBLIC_KEY_BYTES));
}

/** Whether `signature` (DER ECDSA-SHA256) over `data` verifies with the raw P-256 key; false for malformed input. */
export function verifyP256(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  let key: KeyObject;
  try {
    key = p256PublicKeyFromRaw(publicKey);
  } catch {
    return false;
  }
  try {
    return verify("sha256", data, { key, dsaEncoding: "der" }, signature);
  } catch {
    return false;
  }
}
