import { createHash } from "node:crypto";
import { p256PublicKeyFromRaw } from "@darkbloom/protocol";
import { TPM_ALG, TPM_ECC_NIST_P256, TPM_HASHES, TPMA_OBJECT } from "./constants.js";
import { TpmFormatError } from "./errors.js";
import { TpmReader } from "./marshal.js";

/** A TPMT_PUBLIC (TPM 2.0 Part 2 §12.2.4), RSA or ECC: the public area that a TPM object's name hashes. */
export interface TpmPublic {
  type: number;
  nameAlg: number;
  objectAttributes: number;
  authPolicy: Uint8Array;
  ecc?: {
    /** The symmetric algorithm of a storage key; TPM_ALG_NULL otherwise. */
    symmetric: number;
    scheme: number;
    /** The scheme's hash; TPM_ALG_NULL when the scheme is. */
    schemeHash: number;
    curve: number;
    kdf: number;
    x: Uint8Array;
    y: Uint8Array;
  };
  rsa?: {
    symmetric: number;
    scheme: number;
    /** The scheme's hash; TPM_ALG_NULL when the scheme is, or has none (RSAES). */
    schemeHash: number;
    keyBits: number;
    /** 0 stands for the default 65537. */
    exponent: number;
    modulus: Uint8Array;
  };
}

/** The largest digest (SHA-512): authPolicy. */
const MAX_DIGEST = 64;
/** The largest ECC coordinate a TPM has (P-521: 66 bytes) and RSA modulus (4096 bits). */
const MAX_ECC_PARAMETER = 66;
const MAX_RSA_MODULUS = 512;

/** Asymmetric schemes whose details are a hash algorithm (Part 2 §11.2.3.5); RSAES has none. */
const HASHED_SCHEMES: ReadonlySet<number> = new Set([
  TPM_ALG.RSASSA,
  TPM_ALG.RSAPSS,
  TPM_ALG.OAEP,
  TPM_ALG.ECDSA,
  TPM_ALG.ECDH,
  TPM_ALG.ECDAA,
  TPM_ALG.SM2,
  TPM_ALG.ECSCHNORR,
  TPM_ALG.ECMQV,
]);
const KDF_SCHEMES: ReadonlySet<number> = new Set([
  TPM_ALG.KDF1_SP800_56A,
  TPM_ALG.KDF2,
  TPM_ALG.KDF1_SP800_108,
]);

/** TPMT_SYM_DEF_OBJECT: the algorithm, then (unless NULL) its key size and mode, which no caller needs. */
function symmetric(reader: TpmReader): number {
  const algorithm = reader.u16("symmetric.algorithm");
  if (algorithm !== TPM_ALG.NULL) {
    reader.u16("symmetric.keyBits");
    reader.u16("symmetric.mode");
  }
  return algorithm;
}

/** TPMT_RSA_SCHEME / TPMT_ECC_SCHEME: the scheme and its hash (ECDAA's commit count is dropped). */
function scheme(reader: TpmReader): { scheme: number; schemeHash: number } {
  const id = reader.u16("scheme");
  if (id === TPM_ALG.NULL || id === TPM_ALG.RSAES) return { scheme: id, schemeHash: TPM_ALG.NULL };
  if (!HASHED_SCHEMES.has(id)) throw new TpmFormatError(`TPMT_PUBLIC: unknown scheme 0x${hex16(id)}`);
  const schemeHash = reader.u16("scheme.hashAlg");
  if (id === TPM_ALG.ECDAA) reader.u16("scheme.count");
  return { scheme: id, schemeHash };
}

function kdf(reader: TpmReader): number {
  const id = reader.u16("kdf");
  if (id === TPM_ALG.NULL) return id;
  if (!KDF_SCHEMES.has(id)) throw new TpmFormatError(`TPMT_PUBLIC: unknown KDF 0x${hex16(id)}`);
  reader.u16("kdf.hashAlg");
  return id;
}

function hex16(value: number): string {
  return value.toString(16).padStart(4, "0");
}

/**
 * Parses a marshalled TPMT_PUBLIC (no TPM2B size in front). Only RSA and ECC objects: a keyed hash or
 * a symmetric cipher is never an attestation or endorsement key. Throws TpmFormatError on anything
 * malformed or trailing bytes.
 */
export function parseTpmtPublic(bytes: Uint8Array): TpmPublic {
  const reader = new TpmReader(bytes, "TPMT_PUBLIC");
  const type = reader.u16("type");
  const nameAlg = reader.u16("nameAlg");
  const objectAttributes = reader.u32("objectAttributes");
  const authPolicy = reader.tpm2b("authPolicy", MAX_DIGEST);
  let pub: TpmPublic;
  if (type === TPM_ALG.ECC) {
    const sym = symmetric(reader);
    const { scheme: id, schemeHash } = scheme(reader);
    const curve = reader.u16("curveID");
    const kdfId = kdf(reader);
    const x = reader.tpm2b("unique.x", MAX_ECC_PARAMETER);
    const y = reader.tpm2b("unique.y", MAX_ECC_PARAMETER);
    pub = { type, nameAlg, objectAttributes, authPolicy };
    pub.ecc = { symmetric: sym, scheme: id, schemeHash, curve, kdf: kdfId, x, y };
  } else if (type === TPM_ALG.RSA) {
    const sym = symmetric(reader);
    const { scheme: id, schemeHash } = scheme(reader);
    const keyBits = reader.u16("keyBits");
    const exponent = reader.u32("exponent");
    const modulus = reader.tpm2b("unique.rsa", MAX_RSA_MODULUS);
    pub = { type, nameAlg, objectAttributes, authPolicy };
    pub.rsa = { symmetric: sym, scheme: id, schemeHash, keyBits, exponent, modulus };
  } else {
    throw new TpmFormatError(`TPMT_PUBLIC: type 0x${hex16(type)} is neither RSA nor ECC`);
  }
  reader.done();
  return pub;
}

/**
 * The object's TPM name: nameAlg || H_nameAlg(TPMT_PUBLIC), what MakeCredential binds a credential
 * to and a quote's qualifiedSigner is derived from. For an acceptable AK, 0x000B || SHA-256(…).
 */
export function tpmObjectName(tpmtPublic: Uint8Array): Uint8Array {
  const { nameAlg } = parseTpmtPublic(tpmtPublic);
  const hash = TPM_HASHES.get(nameAlg);
  if (!hash) throw new TpmFormatError(`TPMT_PUBLIC: nameAlg 0x${hex16(nameAlg)} is not a hash algorithm`);
  const name = new Uint8Array(2 + hash.size);
  new DataView(name.buffer).setUint16(0, nameAlg);
  name.set(createHash(hash.node).update(tpmtPublic).digest(), 2);
  return name;
}

/** What an attestation key must be: bound to its TPM, generated in it, and only able to sign TPM-made data. */
const AK_REQUIRED_ATTRIBUTES: readonly (keyof typeof TPMA_OBJECT)[] = [
  "fixedTPM",
  "fixedParent",
  "sensitiveDataOrigin",
  "userWithAuth",
  "restricted",
  "sign",
];

/**
 * A one-line reason the public area is not an acceptable attestation key, or undefined: an ECC NIST
 * P-256 restricted signing key (fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, restricted,
 * sign; not decrypt), nameAlg SHA-256, ECDSA with SHA-256, symmetric and KDF NULL, a point on the curve.
 * `restricted` is what makes a quote trustworthy: such a key refuses to sign data that starts with
 * TPM_GENERATED_VALUE unless the TPM produced it.
 */
export function attestationKeyProblem(pub: TpmPublic): string | undefined {
  if (pub.type !== TPM_ALG.ECC || !pub.ecc) return `the AK is not an ECC key (type 0x${hex16(pub.type)})`;
  if (pub.nameAlg !== TPM_ALG.SHA256) return `the AK's nameAlg is 0x${hex16(pub.nameAlg)}, not SHA-256`;
  const missing = AK_REQUIRED_ATTRIBUTES.filter((name) => (pub.objectAttributes & TPMA_OBJECT[name]) === 0);
  if (missing.length > 0) return `the AK lacks the attributes ${missing.join(", ")}`;
  if ((pub.objectAttributes & TPMA_OBJECT.decrypt) !== 0)
    return "the AK is a decryption key (decrypt is set)";
  const ecc = pub.ecc;
  if (ecc.curve !== TPM_ECC_NIST_P256) return `the AK's curve is 0x${hex16(ecc.curve)}, not NIST P-256`;
  if (ecc.scheme !== TPM_ALG.ECDSA || ecc.schemeHash !== TPM_ALG.SHA256) {
    return `the AK's scheme is 0x${hex16(ecc.scheme)} with hash 0x${hex16(ecc.schemeHash)}, not ECDSA with SHA-256`;
  }
  if (ecc.symmetric !== TPM_ALG.NULL) return "the AK has a symmetric algorithm (a signing key has none)";
  if (ecc.kdf !== TPM_ALG.NULL) return "the AK has a KDF (a signing key has none)";
  try {
    p256PublicKeyFromRaw(ecPublicPoint(pub));
  } catch (error) {
    return `the AK's public point is not on P-256: ${error instanceof Error ? error.message : String(error)}`;
  }
  return undefined;
}

/** The SEC1 uncompressed point (0x04 || x || y, 65 bytes) of a P-256 public area; x and y left-padded to 32. */
export function ecPublicPoint(pub: TpmPublic): Uint8Array {
  if (!pub.ecc || pub.ecc.curve !== TPM_ECC_NIST_P256)
    throw new TpmFormatError("not a NIST P-256 public area");
  const { x, y } = pub.ecc;
  if (x.length === 0 || y.length === 0 || x.length > 32 || y.length > 32) {
    throw new TpmFormatError(`P-256 coordinates of ${x.length} and ${y.length} bytes`);
  }
  const point = new Uint8Array(65);
  point[0] = 0x04;
  point.set(x, 1 + 32 - x.length);
  point.set(y, 33 + 32 - y.length);
  return point;
}
