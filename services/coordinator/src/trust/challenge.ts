import { type ChallengeStatusDocument, challengeSigningInput, verifyP256 } from "@darkbloom/protocol";
import type { AttestationResponse } from "@darkbloom/protocol/provider/v1";
import { parseChallengeStatus, securityViolations } from "./attestation.js";
import { TrustCode, type TrustFinding } from "./reasons.js";

/** An issued challenge: what the answer must echo and sign. */
export interface IssuedChallenge {
  nonce: Uint8Array;
  timestampMs: bigint;
}

export interface ChallengeCheck {
  /** Empty when the answer passed. */
  findings: TrustFinding[];
  /** The status document, when the signature verified and it parsed. */
  status: ChallengeStatusDocument | undefined;
}

/**
 * Checks an answer to `challenge` (whose nonce the caller has matched): the echoed timestamp, the
 * signature over nonce ‖ timestamp ‖ status (challengeSigningInput) with the attestation key, the
 * status document, SIP and Secure Boot, and that every loaded model carries the weight hash it was
 * registered with. (The binary allowlist is policy and is checked by the caller.)
 */
export function checkChallengeResponse(
  challenge: IssuedChallenge,
  response: AttestationResponse,
  publicKey: Uint8Array,
  registeredModels: ReadonlyMap<string, string>,
): ChallengeCheck {
  if (response.timestampMs !== challenge.timestampMs) {
    return {
      findings: [
        { code: TrustCode.challengeFailed, message: "the response does not echo the challenge timestamp" },
      ],
      status: undefined,
    };
  }
  const signed = challengeSigningInput(challenge.nonce, challenge.timestampMs, response.status);
  if (!verifyP256(publicKey, signed, response.signature)) {
    return {
      findings: [
        {
          code: TrustCode.badSignature,
          message: "a challenge response is not signed by the attestation key",
        },
      ],
      status: undefined,
    };
  }
  let status: ChallengeStatusDocument;
  try {
    status = parseChallengeStatus(response.status);
  } catch (error) {
    return {
      findings: [{ code: TrustCode.challengeFailed, message: `invalid status: ${(error as Error).message}` }],
      status: undefined,
    };
  }
  const findings = securityViolations(status.sip, status.secure_boot, "challenge");
  for (const m of status.models) {
    const registered = registeredModels.get(m.id);
    if (registered === undefined) {
      findings.push({
        code: TrustCode.modelHashMismatch,
        message: `loaded model ${m.id} was not registered`,
      });
    } else if (registered !== m.weight_sha256) {
      findings.push({
        code: TrustCode.modelHashMismatch,
        message: `loaded model ${m.id} has weight hash ${m.weight_sha256.slice(0, 12)}…, registered ${registered.slice(0, 12) || "(none)"}…`,
      });
    }
  }
  return { findings, status };
}

/** Findings that make a provider untrusted for the rest of its session. */
export const STICKY_FINDINGS: ReadonlySet<string> = new Set([
  TrustCode.badSignature,
  TrustCode.sipDisabled,
  TrustCode.secureBootDisabled,
  TrustCode.modelHashMismatch,
]);
