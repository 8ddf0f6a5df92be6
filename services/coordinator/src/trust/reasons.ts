/**
 * Stable codes for why a provider has the trust level it has (RuntimeStatus.reasons,
 * GET /v1/providers/attestation). Codes are part of the API: add new ones, never rename.
 */
export const TrustCode = {
  /** The provider sent no attestation: trust level none. */
  noAttestation: "no_attestation",
  /** The attestation or a challenge response is not signed by the presented key. */
  badSignature: "bad_signature",
  /** The attestation blob is not a valid canonical document or its key is not a P-256 point. */
  malformedAttestation: "malformed_attestation",
  /** The blob's X25519 key is not the Register's encryption_public_key. */
  keyMismatch: "key_mismatch",
  /** The blob contradicts the Register (machine id, daemon version or signer kind). */
  attestationMismatch: "attestation_mismatch",
  /** Another live provider (another machine id) presented the same signing key. */
  duplicateKey: "duplicate_key",
  /** System Integrity Protection is reported disabled. */
  sipDisabled: "sip_disabled",
  /** Secure Boot is reported disabled. */
  secureBootDisabled: "secure_boot_disabled",
  /** The daemon's binary hash is not in the active releases' allowlist. */
  unknownBinary: "unknown_binary",
  /** A loaded model's hash is not the weight_sha256 registered for it (or the model was not registered). */
  modelHashMismatch: "model_hash_mismatch",
  /** Three challenges in a row went unanswered within the deadline. */
  challengeExpired: "challenge_expired",
  /** Three challenges in a row failed (malformed answer, wrong timestamp, bad status document). */
  challengeFailed: "challenge_failed",
  /** An answer carried a nonce already answered (or issued to another provider). */
  replayedNonce: "replayed_nonce",
  /** The daemon is older than the minimum provider version: not routed. */
  versionBelowMinimum: "version_below_minimum",
  /** No challenge has passed within the freshness window yet (or the latest one did not pass). */
  attestationStale: "attestation_stale",
  /** Informational: a Secure Enclave key that is not enrolled as hardware is trusted as self_signed. */
  hardwareUnverified: "hardware_unverified",
  /** Informational: the signing key is ephemeral (the persistent key was unavailable). */
  ephemeralKey: "ephemeral_key",
  /**
   * Informational: the TPM's endorsement certificate does not chain to a configured EK CA (or none is
   * configured): the TPM may be genuine, but nothing shows it; trusted as self_signed.
   */
  tpmUnknownEkCa: "tpm_unknown_ek_ca",
  /** Informational: the endorsement certificate is missing, unparseable, expired or not RSA 2048. */
  tpmBadEkCertificate: "tpm_bad_ek_certificate",
  /**
   * The TPM attestation key is not the attestation's key, not a restricted signing key that cannot
   * leave the TPM, or a quote is not signed by it.
   */
  tpmWrongKey: "tpm_wrong_key",
  /** The TPM did not activate the credential: the key does not live beside the certified EK. */
  tpmActivationFailed: "tpm_activation_failed",
  /** A quote that is not this challenge's (its qualifying data), or whose TPM clock went backwards. */
  tpmQuoteReplay: "tpm_quote_replay",
  /** A challenge answer without a valid quote (missing, malformed, PCR values not the quoted ones). */
  tpmBadQuote: "tpm_bad_quote",
  /** The boot-state PCRs changed between two quotes of one session (they cannot without a reboot). */
  tpmPcrChanged: "tpm_pcr_changed",
  /** Informational: the quoted boot state is not one the coordinator's PCR policy allows; self_signed. */
  tpmPcrMismatch: "tpm_pcr_mismatch",
} as const;

export type TrustCodeName = (typeof TrustCode)[keyof typeof TrustCode];

export interface TrustFinding {
  code: string;
  message: string;
}
