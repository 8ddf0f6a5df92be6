import { createPublicKey, verify } from "node:crypto";
import { existsSync } from "node:fs";
import { DEFAULT_TCTI, Tpm, type TpmBinding, type TpmQuoteResult, tpmErrorCode } from "@darkbloom/native/tpm";
import type { Logger } from "pino";
import type { AttestationSigner } from "./signer.js";

/** What a provider registers with to have its TPM key verified (Register.tpm). */
export interface TpmEvidenceInit {
  /** The RSA EK certificate, DER; empty when the TPM has none (the coordinator then cannot verify). */
  ekCertificate: Uint8Array;
  /** The attestation key's marshalled TPMT_PUBLIC. */
  attestationKeyPublic: Uint8Array;
}

/** The attestation key changed under a running daemon (the TPM was cleared or replaced). */
export class TpmKeyChangedError extends Error {
  override readonly name = "TpmKeyChangedError";
  readonly code = "tpm_key_changed";
}

/**
 * The attestation key in a TPM 2.0: a restricted ECC P-256 signing key, a primary key of the
 * endorsement hierarchy kept at a persistent handle (see native/addon/tpm). Besides signing like every
 * signer, it answers the coordinator's TPM checks: credential activation (the key lives beside the
 * certified endorsement key) and quotes over the boot-state PCRs.
 *
 * Every signature is checked against the public key registered at start before it leaves: if the key
 * at the handle is gone, the addon derives it again, which gives the same key on the same TPM; a
 * different key means the endorsement seed changed (TPM cleared), and this session's key is gone for
 * good, so the signer says so instead of sending signatures the coordinator would count as forged.
 */
export class TpmSigner implements AttestationSigner {
  readonly kind = "tpm" as const;
  readonly persistent = true;
  private readonly key: ReturnType<typeof createPublicKey>;

  private constructor(
    private readonly tpm: Tpm,
    private readonly point: Uint8Array,
    readonly evidence: TpmEvidenceInit,
  ) {
    this.key = createPublicKey({
      key: {
        kty: "EC",
        crv: "P-256",
        x: Buffer.from(point.subarray(1, 33)).toString("base64url"),
        y: Buffer.from(point.subarray(33, 65)).toString("base64url"),
      },
      format: "jwk",
    });
  }

  /**
   * Opens the TPM at `tcti`, reads its EK certificate and loads (or creates once) the attestation key.
   * No TPM there: the first call rejects with tpm_unavailable.
   */
  static async open(options: {
    tcti: string;
    binding?: TpmBinding;
    attestationKeyHandle?: number;
  }): Promise<TpmSigner> {
    const tpm = Tpm.open(options);
    const [ekCertificate, key] = [await tpm.ekCertificate(), await tpm.loadOrCreateAttestationKey()];
    return new TpmSigner(tpm, key.publicKey, {
      ekCertificate: ekCertificate ?? new Uint8Array(),
      attestationKeyPublic: key.tpmtPublic,
    });
  }

  get tcti(): string {
    return this.tpm.tcti;
  }

  publicKey(): Uint8Array {
    return this.point;
  }

  async sign(data: Uint8Array): Promise<Uint8Array> {
    const signature = await this.tpm.sign(data);
    this.check(data, signature);
    return signature;
  }

  /** The secret of the coordinator's credential (TPM2_ActivateCredential). */
  activateCredential(credentialBlob: Uint8Array, encryptedSecret: Uint8Array): Promise<Uint8Array> {
    return this.tpm.activateCredential(credentialBlob, encryptedSecret);
  }

  /** A quote over the SHA-256 `pcrs` with `qualifyingData`. */
  async quote(qualifyingData: Uint8Array, pcrs: readonly number[]): Promise<TpmQuoteResult> {
    const quote = await this.tpm.quote(qualifyingData, pcrs);
    this.check(quote.attest, quote.signature);
    return quote;
  }

  private check(data: Uint8Array, signature: Uint8Array): void {
    if (!verify("sha256", data, this.key, signature)) {
      throw new TpmKeyChangedError(
        "the TPM's attestation key is not the one this daemon registered with (was the TPM cleared?); restart the daemon to register the new key",
      );
    }
  }
}

/** Whether `signer` is a TPM signer (its evidence and TPM operations are available). */
export function isTpmSigner(signer: AttestationSigner): signer is TpmSigner {
  return signer instanceof TpmSigner;
}

/**
 * The TCTI the `tpm` setting names: "off" never touches a TPM; "auto" is the kernel's
 * resource-managed device when there is one ("absent" when not); anything else is a TCTI used as given.
 */
export function tpmTcti(
  setting: string,
  deviceExists: (path: string) => boolean = existsSync,
): string | "off" | "absent" {
  if (setting !== "auto") return setting;
  return deviceExists("/dev/tpmrm0") ? DEFAULT_TCTI : "absent";
}

/**
 * The TPM signer the `tpm` setting asks for (tpmTcti), or undefined (with one warning saying why)
 * when no TPM is usable.
 */
export async function openTpmSigner(
  setting: string,
  log: Logger | undefined,
  options: { binding?: TpmBinding; deviceExists?: (path: string) => boolean } = {},
): Promise<TpmSigner | undefined> {
  const tcti = tpmTcti(setting, options.deviceExists);
  if (tcti === "off") return undefined;
  if (tcti === "absent") {
    log?.warn("no TPM found (/dev/tpmrm0); attesting with the software key (trust self_signed)");
    return undefined;
  }
  try {
    const signer = await TpmSigner.open({ tcti, ...(options.binding ? { binding: options.binding } : {}) });
    log?.info(
      { tcti, ekCertificate: signer.evidence.ekCertificate.length > 0 },
      "attestation key: TPM 2.0 key in the endorsement hierarchy",
    );
    if (signer.evidence.ekCertificate.length === 0) {
      log?.warn("the TPM has no RSA EK certificate (NV 0x01c00002): the coordinator cannot verify it");
    }
    return signer;
  } catch (error) {
    const code = tpmErrorCode(error) ?? "tpm_error";
    log?.warn(
      { code, tcti, err: (error as Error).message },
      code === "tpm_not_built"
        ? "the TPM addon is not built (npm run build:native); attesting with the software key (trust self_signed)"
        : "the TPM is not usable; attesting with the software key (trust self_signed)",
    );
    return undefined;
  }
}
