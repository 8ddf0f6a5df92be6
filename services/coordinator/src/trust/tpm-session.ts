import { randomBytes, timingSafeEqual } from "node:crypto";
import { TPM_QUOTE_PCRS, tpmQuoteQualifyingData } from "@darkbloom/protocol";
import type { AttestationResponse, TpmCredential } from "@darkbloom/protocol/provider/v1";
import { TrustCode, type TrustFinding } from "./reasons.js";
import { type EkTrustStore, makeCredential, verifyQuote } from "./tpm/index.js";
import { certifyEk, type EkCertification, type TpmRegistration } from "./tpm-evidence.js";

/** The coordinator's TPM policy. */
export interface TpmPolicy {
  /** The EK CAs configured now (undefined: none, no TPM is certified). */
  ekRoots(): EkTrustStore | undefined;
  /**
   * Allowed boot states: hex SHA-256 digests of the concatenated SHA-256 values of PCRs 0-7 (what
   * `GET /v1/providers/attestation` publishes per provider). Empty: any boot state earns tpm.
   */
  pcrAllowlist: ReadonlySet<string>;
}

/** A credential sent with a challenge, and the secret its answer must carry. */
export interface CredentialOffer {
  credential: Pick<TpmCredential, "credentialBlob" | "encryptedSecret">;
  secret: Uint8Array;
}

/** What the TPM part of a challenge answer showed. */
export interface TpmCheck {
  /** Every finding (empty: the TPM part passed). */
  findings: TrustFinding[];
  /** The findings that make the provider untrusted for the rest of its session. */
  sticky: TrustFinding[];
}

/**
 * One TPM-signed session's TPM state between challenges. Trust level tpm needs all of: an endorsement
 * certificate that chains to a configured EK CA (judged at registration and again whenever the EK
 * CAs change: a CA added certifies connected TPMs, a CA removed uncertifies them and their
 * activation with them), the credential made for that EK
 * and the attestation key's name activated by the provider (once per session: the first challenge
 * carries it, and every challenge until one is answered), a valid quote in the latest answer, and a
 * boot state the policy allows.
 *
 * Quotes are checked for freshness (their qualifying data is this challenge's), for the key (the
 * attestation key signed them), for the TPM's clock (it never goes back within a boot), and for the
 * boot state: the first quote of a session pins its PCR digest, and a later one that differs is a
 * violation, because PCRs 0-7 do not change while a machine runs and a reboot is a new session.
 */
export class TpmSessionTrust {
  private activated = false;
  private pinned: string | undefined;
  private previous: { clock: bigint; resetCount: number; restartCount: number } | undefined;
  private policyFinding: TrustFinding | undefined;
  private ek: EkCertification;
  /** The latest accepted quote's PCR digest (published). */
  pcrDigest: string | undefined;

  constructor(
    private readonly registration: TpmRegistration,
    private readonly policy: TpmPolicy,
  ) {
    this.ek = certifyEk(registration.ekCertificate, policy.ekRoots());
  }

  /** Whether the EK certificate chains to a configured EK CA. */
  get ekCertified(): boolean {
    return this.ek.ekPublicKey !== undefined;
  }

  /**
   * Judges the EK certificate again against the EK CAs configured now; true when that changed the
   * session's standing. An EK no longer certified loses its activation: the credential proved the key
   * lives beside that EK, which no longer counts for anything.
   */
  recertify(): boolean {
    const before = this.ek;
    this.ek = certifyEk(this.registration.ekCertificate, this.policy.ekRoots());
    const changed =
      (before.ekPublicKey === undefined) !== (this.ek.ekPublicKey === undefined) ||
      before.finding?.code !== this.ek.finding?.code;
    if (this.ek.ekPublicKey === undefined) this.activated = false;
    return changed;
  }

  /** Whether the provider activated the credential (its key lives beside the certified EK). */
  get activatedKey(): boolean {
    return this.activated;
  }

  /** Whether the session holds trust level tpm now (given a fresh passed challenge). */
  get earned(): boolean {
    return this.activated && this.ek.ekPublicKey !== undefined && this.policyFinding === undefined;
  }

  /** Why the session is held below tpm (informational): its EK is not certified, or its boot state. */
  notes(): TrustFinding[] {
    return [this.ek.finding, this.policyFinding].filter((f): f is TrustFinding => f !== undefined);
  }

  /** A fresh credential for the next challenge, while the key is not activated and the EK is certified. */
  credentialOffer(): CredentialOffer | undefined {
    const ek = this.ek.ekPublicKey;
    if (this.activated || !ek) return undefined;
    const secret = new Uint8Array(randomBytes(32));
    return { credential: makeCredential(ek, this.registration.akName, secret), secret };
  }

  /** Checks an answer's quote and, when the challenge carried a credential, its secret. */
  check(
    challenge: { nonce: Uint8Array; timestampMs: bigint; tpmSecret?: Uint8Array | undefined },
    response: AttestationResponse,
  ): TpmCheck {
    const findings: TrustFinding[] = [];
    const sticky: TrustFinding[] = [];
    const fail = (code: string, message: string, isSticky: boolean): void => {
      findings.push({ code, message });
      if (isSticky) sticky.push({ code, message });
    };
    if (challenge.tpmSecret) {
      const got = response.tpmCredentialSecret;
      if (got.length === challenge.tpmSecret.length && timingSafeEqual(got, challenge.tpmSecret)) {
        this.activated = true;
      } else {
        fail(
          TrustCode.tpmActivationFailed,
          got.length === 0
            ? "the TPM did not activate the credential made for its endorsement key and attestation key"
            : "the activated credential's secret is not the one sent",
          true,
        );
      }
    }
    const quote = response.tpmQuote;
    if (!quote) {
      fail(TrustCode.tpmBadQuote, "a TPM-signed session answered without a quote", false);
      return { findings, sticky };
    }
    const verdict = verifyQuote({
      attest: quote.attest,
      signature: quote.signature,
      akPublicKey: this.registration.akPublicKey,
      expectedExtraData: tpmQuoteQualifyingData(challenge.nonce, challenge.timestampMs, response.status),
      expectedPcrs: TPM_QUOTE_PCRS,
      pcrValues: quote.pcrValues,
      ...(this.previous ? { previous: this.previous } : {}),
    });
    if (!verdict.ok) {
      fail(verdict.code, verdict.message, verdict.code !== TrustCode.tpmBadQuote);
      return { findings, sticky };
    }
    const { clock, resetCount, restartCount } = verdict.quote;
    this.previous = { clock, resetCount, restartCount };
    if (this.pinned !== undefined && this.pinned !== verdict.pcrComposite) {
      fail(
        TrustCode.tpmPcrChanged,
        `the boot-state PCRs changed within the session (${this.pinned.slice(0, 12)}… → ${verdict.pcrComposite.slice(0, 12)}…)`,
        true,
      );
      return { findings, sticky };
    }
    this.pinned = verdict.pcrComposite;
    this.pcrDigest = verdict.pcrComposite;
    this.policyFinding =
      this.policy.pcrAllowlist.size === 0 || this.policy.pcrAllowlist.has(verdict.pcrComposite)
        ? undefined
        : {
            code: TrustCode.tpmPcrMismatch,
            message: `boot state ${verdict.pcrComposite.slice(0, 12)}… is not in the coordinator's PCR policy; trusted as self_signed`,
          };
    return { findings, sticky };
  }
}
