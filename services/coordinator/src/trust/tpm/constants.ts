/** The TPM 2.0 constants (Part 2, Structures) the coordinator's checks need. */

/** TPM_ALG_ID values. */
export const TPM_ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  AES: 0x0006,
  KEYEDHASH: 0x0008,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  SM2: 0x001b,
  ECSCHNORR: 0x001c,
  ECMQV: 0x001d,
  KDF1_SP800_56A: 0x0020,
  KDF2: 0x0021,
  KDF1_SP800_108: 0x0022,
  ECC: 0x0023,
  SYMCIPHER: 0x0025,
  CFB: 0x0043,
} as const;

/** TPM_ECC_CURVE. */
export const TPM_ECC_NIST_P256 = 0x0003;

/** TPMA_OBJECT bits. */
export const TPMA_OBJECT = {
  fixedTPM: 1 << 1,
  stClear: 1 << 2,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  encryptedDuplication: 1 << 11,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
} as const;

/** TPM_GENERATED_VALUE: what every TPMS_ATTEST starts with, and what a restricted key refuses to sign otherwise. */
export const TPM_GENERATED_VALUE = 0xff544347;
/** TPM_ST_ATTEST_QUOTE. */
export const TPM_ST_ATTEST_QUOTE = 0x8018;

/** The hash algorithms a TPM object's name can use: digest size and Node's name for them. */
export const TPM_HASHES: ReadonlyMap<number, { size: number; node: string }> = new Map([
  [TPM_ALG.SHA1, { size: 20, node: "sha1" }],
  [TPM_ALG.SHA256, { size: 32, node: "sha256" }],
  [TPM_ALG.SHA384, { size: 48, node: "sha384" }],
  [TPM_ALG.SHA512, { size: 64, node: "sha512" }],
]);
