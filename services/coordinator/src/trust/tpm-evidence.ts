import type { KeyObject } from "node:crypto";
import type { TpmEvidence } from "@darkbloom/protocol/provider/v1";
import { TrustCode, type TrustFinding } from "./reasons.js";
import {
  attestationKeyProblem,
  type EkTrustStore,
  ecPublicPoint,
  parseTpmtPublic,
  type TpmPublic,
  tpmObjectName,
  verifyEkCertificate,
} from "./tpm/index.js";

/** What a TPM-signed registration established, for its challenges to build on. */
export interface TpmRegistration {
  /** The attestation key, SEC1 (the attestation's key: checked equal). */
  akPublicKey: Uint8Array;
  /** The attestation key's TPM name, which the credential is bound to. */
  akName: Uint8Array;
  /** The EK certificate as registered (DER; empty when the TPM has none): see certifyEk. */
  ekCertificate: Uint8Array;
}

export type TpmEvidenceVerdict =
  | { ok: true; registration: TpmRegistration }
  | { ok: false; finding: TrustFinding };

/**
 * Checks a TPM signer's Register.tpm attestation key's public area: a restricted P-256 signing key
 * that cannot leave its TPM, and the very key that signed the attestation. A key that is not what it
 * must be refuses the registration (tpm_wrong_key). The endorsement certificate is the session's
 * business (certifyEk), since the EK CAs it is judged against may change while it lasts.
 */
export function verifyTpmEvidence(
  evidence: TpmEvidence | undefined,
  attestationKey: Uint8Array,
): TpmEvidenceVerdict {
  const wrongKey = (message: string): TpmEvidenceVerdict => ({
    ok: false,
    finding: { code: TrustCode.tpmWrongKey, message },
  });
  if (!evidence || evidence.attestationKeyPublic.length === 0) {
    return wrongKey("a TPM-signed attestation without the TPM attestation key's public area");
  }
  let area: TpmPublic;
  try {
    area = parseTpmtPublic(evidence.attestationKeyPublic);
  } catch (error) {
    return wrongKey(`the TPM attestation key's public area is malformed: ${(error as Error).message}`);
  }
  const problem = attestationKeyProblem(area);
  if (problem) return wrongKey(`the TPM attestation key is not acceptable: ${problem}`);
  if (!Buffer.from(ecPublicPoint(area)).equals(attestationKey)) {
    return wrongKey("the TPM attestation key is not the key that signed the attestation");
  }
  return {
    ok: true,
    registration: {
      akPublicKey: attestationKey,
      akName: tpmObjectName(evidence.attestationKeyPublic),
      ekCertificate: evidence.ekCertificate,
    },
  };
}

/** Whether an EK certificate chains to the configured EK CAs: its key, or why not. */
export type EkCertification =
  | { ekPublicKey: KeyObject; finding?: undefined }
  | { ekPublicKey?: undefined; finding: TrustFinding };

/**
 * Certifies a TPM's endorsement key against the EK CAs configured now (at registration, and again
 * whenever the bundle changes). What does not verify keeps the provider at self_signed, with why.
 */
export function certifyEk(ekCertificate: Uint8Array, roots: EkTrustStore | undefined): EkCertification {
  if (!roots) {
    return {
      finding: {
        code: TrustCode.tpmUnknownEkCa,
        message: "no TPM EK CA is configured on this coordinator (--tpm-ek-ca); trusted as self_signed",
      },
    };
  }
  if (ekCertificate.length === 0) {
    return {
      finding: {
        code: TrustCode.tpmBadEkCertificate,
        message: "the TPM has no EK certificate; trusted as self_signed",
      },
    };
  }
  const ek = verifyEkCertificate(ekCertificate, roots);
  if (!ek.ok) return { finding: { code: ek.code, message: `${ek.message}; trusted as self_signed` } };
  return { ekPublicKey: ek.publicKey };
}
