import {
  ATTESTATION_FORMAT,
  ATTESTATION_SIGNERS,
  type AttestationDocument,
  type AttestationSignerName,
  CHALLENGE_STATUS_FORMAT,
  type ChallengeStatusDocument,
  P256_PUBLIC_KEY_BYTES,
  parseCanonicalJson,
  SECURITY_STATES,
  type SecurityState,
  verifyP256,
} from "@darkbloom/protocol";
import { type Register, type SignerKind, TrustLevel } from "@darkbloom/protocol/provider/v1";
import { TrustCode, type TrustFinding } from "./reasons.js";
import { type TpmRegistration, verifyTpmEvidence } from "./tpm-evidence.js";

const HEX64 = /^[0-9a-f]{64}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const MAX_TEXT = 256;

/** An attestation whose signature verified over the exact bytes received. */
export interface VerifiedAttestation {
  document: AttestationDocument;
  blob: Uint8Array;
  signature: Uint8Array;
  /** SEC1 uncompressed P-256 point. */
  publicKey: Uint8Array;
  publicKeyHex: string;
  signer: SignerKind;
}

export interface RegistrationVerdict {
  /** The trust the attestation itself earns (before challenges and policy). */
  level: TrustLevel;
  /** Set when the signature verified and the blob matches the Register: challenges use its key. */
  attestation: VerifiedAttestation | undefined;
  /** Findings that make the provider untrusted for this session (sticky). */
  violations: TrustFinding[];
  /** Findings that explain the level without lowering it. */
  notes: TrustFinding[];
  /** A TPM signer's verified evidence: what its challenges check (credential, quotes). */
  tpm?: TpmRegistration | undefined;
}

export interface RegistrationPolicy {
  /**
   * Hex SEC1 public keys of Secure Enclave keys enrolled out of band as hardware-bound: only these
   * earn TRUST_LEVEL_HARDWARE (no Apple attestation chain can be verified here).
   */
  hardwareKeys: ReadonlySet<string>;
}

/**
 * Verifies a Register's attestation: the P-256 signature over the blob's exact bytes, the blob's
 * canonical form and fields, and its binding to the Register (X25519 key, machine id, daemon version,
 * signer kind). SIP or Secure Boot reported disabled are violations on a verified attestation.
 */
export function verifyRegistration(register: Register, policy: RegistrationPolicy): RegistrationVerdict {
  const att = register.attestation;
  const refuse = (code: string, message: string): RegistrationVerdict => ({
    level: TrustLevel.NONE,
    attestation: undefined,
    violations: [{ code, message }],
    notes: [],
  });
  if (!att || att.blob.length === 0) {
    return {
      level: TrustLevel.NONE,
      attestation: undefined,
      violations: [],
      notes: [{ code: TrustCode.noAttestation, message: "the provider sent no attestation" }],
    };
  }
  if (att.publicKey.length !== P256_PUBLIC_KEY_BYTES || att.publicKey[0] !== 0x04) {
    return refuse(
      TrustCode.malformedAttestation,
      `the attestation public key must be a 65-byte uncompressed P-256 point, got ${att.publicKey.length} bytes`,
    );
  }
  if (att.blob.length > 16_384) {
    return refuse(
      TrustCode.malformedAttestation,
      `the attestation blob is ${att.blob.length} bytes, over 16384`,
    );
  }
  if (!verifyP256(att.publicKey, att.blob, att.signature)) {
    return refuse(TrustCode.badSignature, "the attestation signature does not verify with the presented key");
  }
  let document: AttestationDocument;
  try {
    document = parseAttestationDocument(att.blob);
  } catch (error) {
    return refuse(
      TrustCode.malformedAttestation,
      `the attestation blob is invalid: ${(error as Error).message}`,
    );
  }
  const blobKey = Buffer.from(document.encryption_public_key, "base64");
  if (register.encryptionPublicKey.length !== 32 || !blobKey.equals(register.encryptionPublicKey)) {
    return refuse(
      TrustCode.keyMismatch,
      "the attestation's encryption_public_key is not the X25519 key the provider registered",
    );
  }
  const expectedSigner = ATTESTATION_SIGNERS[document.signer];
  if (att.signer !== expectedSigner) {
    return refuse(
      TrustCode.attestationMismatch,
      `the attestation says signer ${document.signer}, the Register another`,
    );
  }
  if (document.machine_id !== register.machineId) {
    return refuse(TrustCode.attestationMismatch, "the attestation's machine_id is not the Register's");
  }
  if (document.daemon_version !== register.daemonVersion) {
    return refuse(TrustCode.attestationMismatch, "the attestation's daemon_version is not the Register's");
  }

  const publicKeyHex = Buffer.from(att.publicKey).toString("hex");
  const attestation: VerifiedAttestation = {
    document,
    blob: att.blob,
    signature: att.signature,
    publicKey: att.publicKey,
    publicKeyHex,
    signer: expectedSigner,
  };
  const violations = securityViolations(document.sip, document.secure_boot, "attestation");
  const notes: TrustFinding[] = [];
  let level: TrustLevel = TrustLevel.SELF_SIGNED;
  if (!document.key_persistent) {
    notes.push({ code: TrustCode.ephemeralKey, message: "the signing key is ephemeral (lost at restart)" });
  }
  let tpm: TpmRegistration | undefined;
  if (document.signer === "tpm") {
    const evidence = verifyTpmEvidence(register.tpm, att.publicKey);
    if (!evidence.ok) return refuse(evidence.finding.code, evidence.finding.message);
    tpm = evidence.registration;
  }
  if (document.signer === "secure_enclave") {
    if (document.key_persistent && policy.hardwareKeys.has(publicKeyHex)) level = TrustLevel.HARDWARE;
    else {
      notes.push({
        code: TrustCode.hardwareUnverified,
        message: document.key_persistent
          ? "the Secure Enclave key is not enrolled as hardware-bound; trusted as self_signed"
          : "an ephemeral Secure Enclave key is trusted as self_signed",
      });
    }
  }
  return { level, attestation, violations, notes, tpm };
}

/** SIP and Secure Boot findings of an attestation or a challenge status. */
export function securityViolations(
  sip: SecurityState,
  secureBoot: SecurityState,
  where: string,
): TrustFinding[] {
  const out: TrustFinding[] = [];
  if (sip === "disabled") {
    out.push({ code: TrustCode.sipDisabled, message: `System Integrity Protection is disabled (${where})` });
  }
  if (secureBoot === "disabled") {
    out.push({ code: TrustCode.secureBootDisabled, message: `Secure Boot is disabled (${where})` });
  }
  return out;
}

/** Parses and validates an attestation blob (canonical JSON with exactly the v1 fields). */
export function parseAttestationDocument(bytes: Uint8Array): AttestationDocument {
  const value = object(parseCanonicalJson(bytes), "the blob");
  exactKeys(value, [
    "binary_sha256",
    "chip",
    "daemon_version",
    "encryption_public_key",
    "format",
    "key_persistent",
    "machine_id",
    "machine_model",
    "os",
    "os_version",
    "secure_boot",
    "serial_sha256",
    "signer",
    "sip",
    "timestamp_ms",
  ]);
  if (value.format !== ATTESTATION_FORMAT) throw new Error(`format must be ${ATTESTATION_FORMAT}`);
  const doc: AttestationDocument = {
    binary_sha256: hex64(value.binary_sha256, "binary_sha256"),
    chip: text(value.chip, "chip"),
    daemon_version: text(value.daemon_version, "daemon_version"),
    encryption_public_key: x25519Base64(value.encryption_public_key),
    format: ATTESTATION_FORMAT,
    key_persistent: bool(value.key_persistent, "key_persistent"),
    machine_id: text(value.machine_id, "machine_id"),
    machine_model: text(value.machine_model, "machine_model"),
    os: text(value.os, "os"),
    os_version: text(value.os_version, "os_version"),
    secure_boot: securityState(value.secure_boot, "secure_boot"),
    serial_sha256: value.serial_sha256 === "" ? "" : hex64(value.serial_sha256, "serial_sha256"),
    signer: signerName(value.signer),
    sip: securityState(value.sip, "sip"),
    timestamp_ms: nonNegativeInteger(value.timestamp_ms, "timestamp_ms"),
  };
  return doc;
}

/** Parses and validates a challenge status (canonical JSON with exactly the v1 fields). */
export function parseChallengeStatus(bytes: Uint8Array): ChallengeStatusDocument {
  if (bytes.length > 65_536) throw new Error(`the status is ${bytes.length} bytes, over 65536`);
  const value = object(parseCanonicalJson(bytes), "the status");
  exactKeys(value, ["binary_sha256", "format", "models", "secure_boot", "sip"]);
  if (value.format !== CHALLENGE_STATUS_FORMAT) throw new Error(`format must be ${CHALLENGE_STATUS_FORMAT}`);
  if (!Array.isArray(value.models) || value.models.length > 256) {
    throw new Error("models must be an array of at most 256 entries");
  }
  const models = value.models.map((entry: unknown, i: number) => {
    const m = object(entry, `models[${i}]`);
    exactKeys(m, ["id", "weight_sha256"]);
    return {
      id: text(m.id, `models[${i}].id`),
      weight_sha256: hex64(m.weight_sha256, `models[${i}].weight_sha256`),
    };
  });
  for (let i = 1; i < models.length; i++) {
    const prev = models[i - 1]?.id ?? "";
    const id = models[i]?.id ?? "";
    if (!(prev < id)) throw new Error("models must be sorted by id without duplicates");
  }
  return {
    binary_sha256: hex64(value.binary_sha256, "binary_sha256"),
    format: CHALLENGE_STATUS_FORMAT,
    models,
    secure_boot: securityState(value.secure_boot, "secure_boot"),
    sip: securityState(value.sip, "sip"),
  };
}

function object(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new Error(`${what} must be an object`);
  return value as Record<string, unknown>;
}

function exactKeys(value: Record<string, unknown>, keys: readonly string[]): void {
  const got = Object.keys(value);
  const missing = keys.filter((k) => !(k in value));
  const extra = got.filter((k) => !keys.includes(k));
  if (missing.length > 0) throw new Error(`missing ${missing.join(", ")}`);
  if (extra.length > 0) throw new Error(`unexpected ${extra.join(", ")}`);
}

function text(value: unknown, field: string): string {
  if (typeof value !== "string" || value.length > MAX_TEXT) {
    throw new Error(`${field} must be a string of at most ${MAX_TEXT} characters`);
  }
  return value;
}

function hex64(value: unknown, field: string): string {
  if (typeof value !== "string" || !HEX64.test(value))
    throw new Error(`${field} must be 64 lowercase hex digits`);
  return value;
}

function bool(value: unknown, field: string): boolean {
  if (typeof value !== "boolean") throw new Error(`${field} must be a boolean`);
  return value;
}

function nonNegativeInteger(value: unknown, field: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new Error(`${field} must be a non-negative integer`);
  }
  return value;
}

function securityState(value: unknown, field: string): SecurityState {
  if (typeof value !== "string" || !(SECURITY_STATES as readonly string[]).includes(value)) {
    throw new Error(`${field} must be one of ${SECURITY_STATES.join(", ")}`);
  }
  return value as SecurityState;
}

function signerName(value: unknown): AttestationSignerName {
  if (typeof value !== "string" || !Object.hasOwn(ATTESTATION_SIGNERS, value)) {
    throw new Error(`signer must be one of ${Object.keys(ATTESTATION_SIGNERS).join(", ")}`);
  }
  return value as AttestationSignerName;
}

function x25519Base64(value: unknown): string {
  if (typeof value !== "string" || !BASE64.test(value) || Buffer.from(value, "base64").length !== 32) {
    throw new Error("encryption_public_key must be the base64 of 32 bytes");
  }
  return value;
}
