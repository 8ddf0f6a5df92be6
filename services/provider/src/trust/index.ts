import type { Logger } from "pino";
import type { HardwareInit } from "../machine/hardware.js";
import { Attestor } from "./attestor.js";
import { daemonBinarySha256 } from "./binary-hash.js";
import { probeSecurityPosture, probeSerialSha256, type SecurityPosture } from "./platform-state.js";
import { createAttestationSigner, type KeychainAddon } from "./secure-enclave.js";
import type { AttestationSigner } from "./signer.js";
import { openTpmSigner } from "./tpm-signer.js";

export {
  type AttestationFacts,
  type AttestationResponseInit,
  Attestor,
  type AttestorOptions,
  answerChallenge,
  type LoadedModel,
  type SignedAttestationInit,
} from "./attestor.js";
export { daemonBinarySha256, daemonCodeRoot, fileSha256, treeSha256 } from "./binary-hash.js";
export {
  hashSerial,
  type ProbeIo,
  probeSecurityPosture,
  probeSerialSha256,
  type SecurityPosture,
} from "./platform-state.js";
export {
  createAttestationSigner,
  DEFAULT_ACCESS_GROUP,
  DEFAULT_KEY_LABEL,
  type KeychainAddon,
  KeychainError,
  type KeychainErrorCode,
  loadKeychainAddon,
  type NativeEnclaveKey,
  SecureEnclaveSigner,
  type SignerFactoryOptions,
} from "./secure-enclave.js";
export { AttestationKeyError, type AttestationSigner } from "./signer.js";
export { attestationKeyPath, SoftwareSigner } from "./software-signer.js";
export {
  isTpmSigner,
  openTpmSigner,
  type TpmEvidenceInit,
  TpmKeyChangedError,
  TpmSigner,
} from "./tpm-signer.js";

/** Overrides of what the daemon attests with (tests). */
export interface DaemonAttestationOptions {
  signer?: AttestationSigner;
  /** The TPM to use on Linux: "auto" (default: /dev/tpmrm0 when present), "off", or a TCTI. */
  tpm?: string;
  addon?: KeychainAddon;
  posture?: SecurityPosture;
  binarySha256?: string;
  serialSha256?: string;
}

/**
 * The daemon's attestor: the machine's signer (Secure Enclave key on macOS when available, else the
 * software key in the data directory), its security posture, hashed serial and binary hash.
 */
export async function createDaemonAttestor(
  init: {
    dataDir: string;
    machineId: string;
    daemonVersion: string;
    hardware: HardwareInit;
    encryptionPublicKey: Uint8Array;
    logger: Logger;
    /** The `tpm` setting (Linux): auto, off, or a TCTI. */
    tpm: string;
  },
  overrides: DaemonAttestationOptions = {},
): Promise<Attestor> {
  const signer =
    overrides.signer ??
    (process.platform === "linux"
      ? await openTpmSigner(overrides.tpm ?? init.tpm, init.logger)
      : undefined) ??
    (await createAttestationSigner({ dataDir: init.dataDir, addon: overrides.addon, logger: init.logger }));
  const [posture, serialSha256, binarySha256] = await Promise.all([
    overrides.posture ?? probeSecurityPosture(),
    overrides.serialSha256 ?? probeSerialSha256(),
    overrides.binarySha256 ?? daemonBinarySha256(),
  ]);
  return Attestor.create({
    signer,
    machineId: init.machineId,
    daemonVersion: init.daemonVersion,
    chip: init.hardware.chip ?? "",
    machineModel: init.hardware.machineModel ?? "",
    os: init.hardware.os ?? "",
    osVersion: init.hardware.osVersion ?? "",
    encryptionPublicKey: init.encryptionPublicKey,
    binarySha256,
    serialSha256,
    posture,
    logger: init.logger,
    ...(overrides.posture ? {} : { probePosture: () => probeSecurityPosture() }),
  });
}
