/**
 * What holds the provider's attestation key. Every implementation signs with ECDSA P-256 over
 * SHA-256 and returns DER signatures; public keys are SEC1 uncompressed points (65 bytes).
 */
export interface AttestationSigner {
  /**
   * "secure_enclave": the key lives in the Apple Secure Enclave; "tpm": in a TPM 2.0 (TpmSigner);
   * "software": in memory or a file.
   */
  readonly kind: "software" | "secure_enclave" | "tpm";
  /** Whether the key survives a restart (false: an ephemeral fallback key). */
  readonly persistent: boolean;
  /** The public key, SEC1 uncompressed (0x04 ‖ X ‖ Y). */
  publicKey(): Uint8Array;
  /** ECDSA-SHA256 over `data`, DER encoded. */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

/** The attestation key cannot be used (bad permissions, wrong owner, not a P-256 key). */
export class AttestationKeyError extends Error {
  override readonly name = "AttestationKeyError";
}
