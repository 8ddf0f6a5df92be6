import {
  constants,
  createCipheriv,
  createHmac,
  type KeyObject,
  publicEncrypt,
  randomBytes,
} from "node:crypto";
import { TPM_HASHES } from "./constants.js";
import { tpm2b } from "./marshal.js";

/**
 * TPM2_MakeCredential done outside a TPM (TPM 2.0 Part 1 §24 "Credential Protection", Part 3 §12.6):
 * a secret only the TPM that holds both the EK and an object with the given name can recover, with
 * TPM2_ActivateCredential. The coordinator sends it at registration; getting the secret back proves
 * the attestation key lives in the same TPM as the certified EK.
 *
 * Only RSA 2048 EKs of the TCG default template (nameAlg SHA-256, AES-128-CFB): the coordinator knows
 * the EK from its certificate alone, and the template is what fixes the hash and the cipher below.
 */

/** The EK's nameAlg (SHA-256): the seed's size, the OAEP hash, the KDF's HMAC. */
const EK_HASH = "sha256";
const SEED_BYTES = 32;
/** The HMAC key is as long as the EK nameAlg's digest. */
const HMAC_KEY_BITS = 256;
/** The EK template's symmetric algorithm: AES-128 in CFB mode, zero IV. */
const SYM_KEY_BITS = 128;
const MAX_SECRET = 32;
/** The OAEP label for a credential's seed, with its terminating NUL (Part 1 §24.4, Annex B.10.3). */
const IDENTITY_LABEL = Buffer.from("IDENTITY\0", "latin1");

/**
 * KDFa (Part 1 §11.4.10.2): NIST SP800-108 in counter mode with HMAC-SHA256;
 * each block is HMAC(key, [i]32 || label || 0x00 || contextU || contextV || [bits]32).
 */
function kdfa(
  key: Uint8Array,
  label: string,
  contextU: Uint8Array,
  contextV: Uint8Array,
  bits: number,
): Buffer {
  const labelBytes = Buffer.from(`${label}\0`, "latin1");
  const sizeInBits = Buffer.alloc(4);
  sizeInBits.writeUInt32BE(bits);
  const blocks: Buffer[] = [];
  for (let counter = 1, produced = 0; produced < bits / 8; counter++) {
    const counterBytes = Buffer.alloc(4);
    counterBytes.writeUInt32BE(counter);
    const block = createHmac(EK_HASH, key)
      .update(counterBytes)
      .update(labelBytes)
      .update(contextU)
      .update(contextV)
      .update(sizeInBits)
      .digest();
    blocks.push(block);
    produced += block.length;
  }
  return Buffer.concat(blocks).subarray(0, bits / 8);
}

/** A TPM name: a hash algorithm id, then a digest of that algorithm's size. */
function checkName(objectName: Uint8Array): void {
  const alg = objectName.length >= 2 ? (objectName[0]! << 8) | objectName[1]! : -1;
  const hash = TPM_HASHES.get(alg);
  if (!hash || objectName.length !== 2 + hash.size) {
    throw new RangeError(`not a TPM object name (${objectName.length} bytes)`);
  }
}

/**
 * The credential for `secret` (1 to 32 bytes) bound to `objectName` (the AK's TPM name) under the EK:
 * `credentialBlob` is the marshalled TPM2B_ID_OBJECT, `encryptedSecret` the TPM2B_ENCRYPTED_SECRET,
 * both with their 2-byte size, as TPM2_ActivateCredential takes them. `random` draws the seed.
 */
export function makeCredential(
  ekPublicKey: KeyObject,
  objectName: Uint8Array,
  secret: Uint8Array,
  random: (n: number) => Uint8Array = randomBytes,
): { credentialBlob: Uint8Array; encryptedSecret: Uint8Array } {
  if (ekPublicKey.asymmetricKeyType !== "rsa" || ekPublicKey.asymmetricKeyDetails?.modulusLength !== 2048) {
    throw new RangeError("the EK must be an RSA 2048 public key");
  }
  checkName(objectName);
  if (secret.length < 1 || secret.length > MAX_SECRET) {
    throw new RangeError(`a credential's secret is 1 to ${MAX_SECRET} bytes, not ${secret.length}`);
  }
  const seed = random(SEED_BYTES);
  if (seed.length !== SEED_BYTES)
    throw new RangeError(`random() gave ${seed.length} bytes, not ${SEED_BYTES}`);

  // The seed goes to the EK's private key only: RSA-OAEP with the EK's nameAlg and the IDENTITY label.
  const wrappedSeed = publicEncrypt(
    {
      key: ekPublicKey,
      padding: constants.RSA_PKCS1_OAEP_PADDING,
      oaepHash: EK_HASH,
      oaepLabel: IDENTITY_LABEL,
    },
    seed,
  );

  // The secret, as a marshalled TPM2B_DIGEST, encrypted under a key that depends on the object's name:
  // a TPM that decrypts the seed but holds no object of that name derives another key.
  const empty = new Uint8Array(0);
  const symKey = kdfa(seed, "STORAGE", objectName, empty, SYM_KEY_BITS);
  const cipher = createCipheriv("aes-128-cfb", symKey, Buffer.alloc(16));
  const encIdentity = Buffer.concat([cipher.update(tpm2b(secret)), cipher.final()]);

  // The outer HMAC covers the encrypted secret and the name: ActivateCredential checks it before it
  // decrypts, so a blob made for another name fails there (TPM_RC_INTEGRITY).
  const hmacKey = kdfa(seed, "INTEGRITY", empty, empty, HMAC_KEY_BITS);
  const outerHmac = createHmac(EK_HASH, hmacKey).update(encIdentity).update(objectName).digest();

  // TPM2B_ID_OBJECT: integrityHMAC as a TPM2B_DIGEST, then encIdentity (the rest of the buffer, no size).
  const idObject = Buffer.concat([tpm2b(outerHmac), encIdentity]);
  return { credentialBlob: tpm2b(idObject), encryptedSecret: tpm2b(wrappedSeed) };
}
