import { existsSync } from "node:fs";
import { tpmErrorCode } from "@darkbloom/native/tpm";
import { TpmSigner, tpmTcti } from "../trust/tpm-signer.js";
import type { CheckResult } from "./doctor.js";

const NAME = "tpm";

/**
 * Doctor's TPM line (Linux): which key the daemon will attest with, and why not the TPM's when it
 * cannot. A missing or unusable TPM is a warning, never a failure: the daemon serves with its
 * software key (trust self_signed). Opening the TPM creates the attestation key when it is absent,
 * exactly as `serve` would.
 */
export async function tpmCheck(
  setting: string,
  deviceExists: (path: string) => boolean = existsSync,
): Promise<CheckResult> {
  const tcti = tpmTcti(setting, deviceExists);
  if (tcti === "off") {
    return { name: NAME, ok: true, detail: "off (--tpm off): the software key, trust self_signed" };
  }
  if (tcti === "absent") {
    return {
      name: NAME,
      ok: true,
      warn: true,
      detail: "no TPM (/dev/tpmrm0): the software key, trust self_signed",
      fix: "enable the TPM in the firmware settings, or --tpm off to silence this",
    };
  }
  try {
    const signer = await TpmSigner.open({ tcti });
    if (signer.evidence.ekCertificate.length === 0) {
      return {
        name: NAME,
        ok: true,
        warn: true,
        detail: `${tcti}: attestation key ready, but the TPM has no RSA EK certificate: the coordinator cannot verify it (trust self_signed)`,
        fix: "provision the EK certificate (the TPM vendor's tool), or accept self_signed",
      };
    }
    return { name: NAME, ok: true, detail: `${tcti}: attestation key ready, EK certificate present` };
  } catch (error) {
    const code = tpmErrorCode(error) ?? "tpm_error";
    const fixes: Record<string, string> = {
      tpm_not_built: "apt-get install -y libtss2-dev && npm run build:native",
      tpm_unavailable: "give the daemon's user access to the TPM (on Debian: the tss group), or --tpm off",
      tpm_handle_in_use:
        "persistent handle 0x81018d00 holds another key: evict it (tpm2_evictcontrol) if it is not in use",
    };
    return {
      name: NAME,
      ok: true,
      warn: true,
      detail: `${tcti}: ${code}: ${(error as Error).message}; the software key, trust self_signed`,
      fix: fixes[code] ?? "see docs/ARCHITECTURE.md, Attestation and trust",
    };
  }
}
