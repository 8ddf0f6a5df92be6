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
  /**
   * The certified endorsement key, when its certificate chained to a configured EK CA: only then is a
   * credential sent (activation proves nothing about a TPM nobody vouches for) and level tpm earned.
   */
  ekPublicKey: KeyObject | undefined;
}

export type TpmEvidenceVerdict =
  | { ok: true; registration: TpmRegistration; notes: TrustFinding[] }
  | { ok: false; finding: TrustFinding };

/**
 * Checks a TPM signer's Register.tpm: the attestation key's public area (a restricted P-256 signing
 * key that cannot leave its TPM, and the very key that signed the attestation) and the endorsement
 * certificate against the configured EK CAs. A key that is not what it must be refuses the
 * registration (tpm_wrong_key); a certificate that does not verify only keeps the provider at
 * self_signed, with the reason.
 */
export function verifyTpmEvidence(
  evidence: TpmEvidence | undefined,
  attestationKey: Uint8Array,
  roots: EkTrustStore | undefined,
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
  const registration: TpmRegistration = {
    akPublicKey: attestationKey,
    akName: tpmObjectName(evidence.attestationKeyPublic),
    ekPublicKey: undefined,
  };
  if (!roots) {
    return {
      ok: true,
      registration,
      notes: [
        {
          code: TrustCode.tpmUnknownEkCa,
          message: "no TPM EK CA is configured on this coordinator (--tpm-ek-ca); trusted as self_signed",
        },
      ],
    };
  }
  if (evidence.ekCertificate.length === 0) {
    return {
      ok: true,
      registration,
      notes: [
        {
          code: TrustCode.tpmBadEkCertificate,
          message: "the TPM has no EK certificate; trusted as self_signed",
        },
      ],
    };
  }
  const ek = verifyEkCertificate(evidence.ekCertificate, roots);
  if (!ek.ok) {
    return {
      ok: true,
      registration,
      notes: [{ code: ek.code, message: `${ek.message}; trusted as self_signed` }],
    };
  }
  registration.ekPublicKey = ek.publicKey;
  return { ok: true, registration, notes: [] };
}
