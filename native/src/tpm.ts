import { createRequire } from "node:module";
import { errorCodes } from "./coded-error.js";
import { ecdsaDer } from "./ecdsa-der.js";

/**
 * The TPM 2.0 addon (addon/tpm, Linux, built by `npm run build:native` against tss2): the provider's
 * attestation key as a primary key of the TPM's endorsement hierarchy, kept at a persistent handle.
 * Errors thrown by it carry a stable `code` (read it with tpmErrorCode, never instanceof: the addon's
 * errors are plain Errors).
 */

/** The RSA 2048 EK certificate's NV index (TCG EK Credential Profile). */
export const EK_CERTIFICATE_RSA_INDEX = 0x01c00002;
/** Where the attestation key is kept unless configured otherwise (endorsement-primary range). */
export const DEFAULT_ATTESTATION_KEY_HANDLE = 0x81018d00;
/** The kernel's resource-managed TPM device, the default TCTI. */
export const DEFAULT_TCTI = "device:/dev/tpmrm0";

export type TpmErrorCode =
  /** The addon is not built on this machine (no tss2 headers when it was installed). */
  | "tpm_not_built"
  /** No TPM answers at the TCTI (no device, no permission, simulator down). */
  | "tpm_unavailable"
  /** The persistent handle holds a key this addon did not make; it is never overwritten. */
  | "tpm_handle_in_use"
  /** The caller passed malformed bytes. */
  | "tpm_bad_input"
  /** TPM2_ActivateCredential refused the credential (not made for this TPM's EK and key). */
  | "tpm_activation_failed"
  | "tpm_error";

const CODES = errorCodes<TpmErrorCode>([
  "tpm_not_built",
  "tpm_unavailable",
  "tpm_handle_in_use",
  "tpm_bad_input",
  "tpm_activation_failed",
  "tpm_error",
]);
const coded = CODES.coded;

/** The TPM error code of any thrown value (an addon Error with `code`), else undefined. */
export const tpmErrorCode: (error: unknown) => TpmErrorCode | undefined = CODES.codeOf;

interface RawSignature {
  r: Uint8Array;
  s: Uint8Array;
}

/** The addon's class, as addon.cc defines it. */
export interface NativeTpmDevice {
  probe(): Promise<void>;
  readNv(index: number): Promise<Uint8Array | null>;
  loadOrCreateAttestationKey(): Promise<{
    public: Uint8Array;
    point: Uint8Array;
    created: boolean;
    persistent: boolean;
  }>;
  sign(data: Uint8Array): Promise<RawSignature>;
  activateCredential(credentialBlob: Uint8Array, encryptedSecret: Uint8Array): Promise<Uint8Array>;
  quote(
    qualifyingData: Uint8Array,
    pcrs: readonly number[],
  ): Promise<{ attest: Uint8Array; signature: RawSignature; pcrValues: Uint8Array[] }>;
}

export interface TpmBinding {
  TpmDevice: new (tcti: string, attestationKeyHandle: number) => NativeTpmDevice;
}

let cached: TpmBinding | null | undefined;

/** The built addon, or undefined when it was not built here. */
export function loadTpmBinding(): TpmBinding | undefined {
  if (cached === undefined) {
    // tss2 logs every TPM error it returns to stderr; the errors reach the caller with a code and a
    // message, and the daemon logs them through pino.
    process.env.TSS2_LOG ??= "all+NONE";
    try {
      cached = createRequire(import.meta.url)("../build/Release/darkbloom_tpm.node") as TpmBinding;
    } catch {
      cached = null;
    }
  }
  return cached ?? undefined;
}

/** The attestation key as the TPM holds it. */
export interface TpmAttestationKey {
  /** The marshalled TPMT_PUBLIC; its hash is the key's TPM name. */
  tpmtPublic: Uint8Array;
  /** The public key, SEC1 uncompressed (65 bytes). */
  publicKey: Uint8Array;
  /** Whether this call derived it (it was not at its persistent handle). */
  created: boolean;
  /** Whether it is at its persistent handle now (false when the owner authorization is not empty). */
  persistent: boolean;
}

/** A TPM2_Quote over SHA-256 PCRs. */
export interface TpmQuoteResult {
  /** The marshalled TPMS_ATTEST that was signed. */
  attest: Uint8Array;
  /** ECDSA-SHA256 over attest, DER. */
  signature: Uint8Array;
  /** The quoted PCRs' values, ascending PCR order. */
  pcrValues: Uint8Array[];
}

export interface OpenTpmOptions {
  /** A tctildr configuration: "device:/dev/tpmrm0" (default), "swtpm:host=…,port=…", "mssim:…". */
  tcti?: string;
  attestationKeyHandle?: number;
  /** The addon (tests); by default the one built in this package. */
  binding?: TpmBinding;
}

/** One TPM; every call opens its own connection, so nothing is held between calls. */
export class Tpm {
  private constructor(
    private readonly device: NativeTpmDevice,
    readonly tcti: string,
  ) {}

  /** Throws tpm_not_built when the addon is missing; nothing touches the TPM until a call. */
  static open(options: OpenTpmOptions = {}): Tpm {
    const binding = options.binding ?? loadTpmBinding();
    if (!binding) throw coded("tpm_not_built", "the TPM addon is not built (npm run build:native)");
    const tcti = options.tcti ?? DEFAULT_TCTI;
    return new Tpm(
      new binding.TpmDevice(tcti, options.attestationKeyHandle ?? DEFAULT_ATTESTATION_KEY_HANDLE),
      tcti,
    );
  }

  /** Resolves when a TPM answers; rejects with tpm_unavailable otherwise. */
  probe(): Promise<void> {
    return this.device.probe();
  }

  /** The RSA EK certificate (DER), or undefined when the manufacturer did not provision one. */
  async ekCertificate(): Promise<Uint8Array | undefined> {
    return (await this.device.readNv(EK_CERTIFICATE_RSA_INDEX)) ?? undefined;
  }

  async loadOrCreateAttestationKey(): Promise<TpmAttestationKey> {
    const key = await this.device.loadOrCreateAttestationKey();
    return { tpmtPublic: key.public, publicKey: key.point, created: key.created, persistent: key.persistent };
  }

  /** ECDSA-SHA256 over data by the attestation key, DER. */
  async sign(data: Uint8Array): Promise<Uint8Array> {
    const { r, s } = await this.device.sign(data);
    return ecdsaDer(r, s);
  }

  /** The secret of a credential made for this TPM's EK and attestation key. */
  activateCredential(credentialBlob: Uint8Array, encryptedSecret: Uint8Array): Promise<Uint8Array> {
    return this.device.activateCredential(credentialBlob, encryptedSecret);
  }

  async quote(qualifyingData: Uint8Array, pcrs: readonly number[]): Promise<TpmQuoteResult> {
    const q = await this.device.quote(qualifyingData, pcrs);
    return {
      attest: q.attest,
      signature: ecdsaDer(q.signature.r, q.signature.s),
      pcrValues: q.pcrValues,
    };
  }
}
