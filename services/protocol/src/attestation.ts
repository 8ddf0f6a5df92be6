/**
 * The byte formats of attestation, shared by the provider (which signs) and the coordinator (which
 * verifies). Both documents are canonical JSON: object keys sorted by UTF-16 code unit (what
 * Array.prototype.sort does), no whitespace, strings as JSON.stringify writes them, integers only.
 * A verifier requires the received bytes to be canonical, so one document has exactly one encoding
 * and no two parsers can read a signed document differently (duplicate keys, number formats…).
 *
 * Attestation blob (Register.attestation.blob): canonical JSON, signed over its exact bytes:
 *
 *   {"binary_sha256":hex64,"chip":string,"daemon_version":string,"encryption_public_key":base64(32 bytes),
 *    "format":"darkbloom.attestation.v1","key_persistent":boolean,"machine_id":string,
 *    "machine_model":string,"os":string,"os_version":string,"secure_boot":SecurityState,
 *    "serial_sha256":hex64|"","signer":"software"|"secure_enclave"|"tpm","sip":SecurityState,
 *    "timestamp_ms":integer}
 *
 * Challenge status (AttestationResponse.status): canonical JSON:
 *
 *   {"binary_sha256":hex64,"format":"darkbloom.challenge-status.v1",
 *    "models":[{"id":string,"weight_sha256":hex64},…] (loaded models, sorted by id),
 *    "secure_boot":SecurityState,"sip":SecurityState}
 *
 * Challenge signature (AttestationResponse.signature): ECDSA P-256 / SHA-256, DER encoded, over
 *
 *   offset  size  content
 *   0       23    ASCII "darkbloom-challenge-v1" followed by one 0x00 byte (domain separation:
 *                 no blob, which starts with "{", and no other signed message can be read as this)
 *   23      32    the challenge nonce
 *   55      8     the challenge timestamp_ms, unsigned 64-bit big-endian
 *   63      4     the status length in bytes, unsigned 32-bit big-endian
 *   67      n     the status bytes (exactly as sent in AttestationResponse.status)
 *
 * A TPM-signed session also answers with a TPM2_Quote over TPM_QUOTE_PCRS whose qualifying data is
 * SHA-256 of that same signing input (tpmQuoteQualifyingData).
 */
import { createHash } from "node:crypto";
import { SignerKind } from "./gen/darkbloom/provider/v1/provider_pb.js";

/** A security feature's state as the provider can determine it. */
export type SecurityState = "enabled" | "disabled" | "unknown" | "not_applicable";

export const SECURITY_STATES: readonly SecurityState[] = ["enabled", "disabled", "unknown", "not_applicable"];

export type AttestationSignerName = "software" | "secure_enclave" | "tpm";

/** The signer names, and the SignerKind each is registered with. */
export const ATTESTATION_SIGNERS: Readonly<Record<AttestationSignerName, SignerKind>> = {
  software: SignerKind.SOFTWARE,
  secure_enclave: SignerKind.SECURE_ENCLAVE,
  tpm: SignerKind.TPM,
};

/**
 * The PCRs a TPM quote covers, in the SHA-256 bank: 0-7 are the boot state (firmware, its
 * configuration, option ROMs, the boot loader and its configuration, Secure Boot policy), which
 * cannot change without a reboot, and a reboot is a new session.
 */
export const TPM_QUOTE_PCRS: readonly number[] = [0, 1, 2, 3, 4, 5, 6, 7];

/**
 * The qualifying data of the quote that answers a challenge: SHA-256 of the challenge's signing
 * input, so the quote is fresh (the nonce), and bound to the status it answers with.
 */
export function tpmQuoteQualifyingData(
  nonce: Uint8Array,
  timestampMs: bigint,
  status: Uint8Array,
): Uint8Array {
  return new Uint8Array(
    createHash("sha256")
      .update(challengeSigningInput(nonce, timestampMs, status))
      .digest(),
  );
}

export const ATTESTATION_FORMAT = "darkbloom.attestation.v1";
export const CHALLENGE_STATUS_FORMAT = "darkbloom.challenge-status.v1";
export const CHALLENGE_DOMAIN = "darkbloom-challenge-v1";
export const CHALLENGE_NONCE_BYTES = 32;

/** The fields of an attestation blob (see the format above). */
export interface AttestationDocument {
  binary_sha256: string;
  chip: string;
  daemon_version: string;
  /** Base64 (standard alphabet, padded) of the 32-byte X25519 key requests are sealed to. */
  encryption_public_key: string;
  format: typeof ATTESTATION_FORMAT;
  /** Whether the signing key survives restarts (false: an ephemeral fallback key). */
  key_persistent: boolean;
  machine_id: string;
  machine_model: string;
  os: string;
  os_version: string;
  secure_boot: SecurityState;
  /** Lowercase hex SHA-256 of "darkbloom-serial-v1:" + the hardware serial; "" when unknown. */
  serial_sha256: string;
  signer: AttestationSignerName;
  sip: SecurityState;
  timestamp_ms: number;
}

/** One loaded model in a challenge status. */
export interface StatusModel {
  id: string;
  weight_sha256: string;
}

/** The fields of a challenge status document (see the format above). */
export interface ChallengeStatusDocument {
  binary_sha256: string;
  format: typeof CHALLENGE_STATUS_FORMAT;
  models: StatusModel[];
  secure_boot: SecurityState;
  sip: SecurityState;
}

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** Canonical JSON of a value: sorted keys, no whitespace; throws on anything but plain JSON with integers. */
export function canonicalJson(value: unknown): string {
  return encode(value as Json, 0);
}

function encode(value: Json, depth: number): string {
  if (depth > 32) throw new TypeError("canonical JSON nests deeper than 32 levels");
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value))
      throw new TypeError(`canonical JSON allows safe integers only, got ${value}`);
    return String(value);
  }
  if (Array.isArray(value)) return `[${value.map((v) => encode(v, depth + 1)).join(",")}]`;
  if (typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    const keys = Object.keys(value).sort();
    const parts: string[] = [];
    for (const key of keys) {
      const v = value[key];
      if (v === undefined) throw new TypeError(`canonical JSON: ${key} is undefined`);
      parts.push(`${JSON.stringify(key)}:${encode(v, depth + 1)}`);
    }
    return `{${parts.join(",")}}`;
  }
  throw new TypeError(`canonical JSON cannot encode ${typeof value}`);
}

const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Parses canonical JSON bytes; throws when they are not valid UTF-8 JSON or not in canonical form
 * (re-encoding the parsed value must give the same bytes).
 */
export function parseCanonicalJson(bytes: Uint8Array): unknown {
  const text = utf8Decoder.decode(bytes);
  const value: unknown = JSON.parse(text);
  if (canonicalJson(value) !== text) throw new SyntaxError("the document is not canonical JSON");
  return value;
}

/** The bytes a challenge signature covers (layout above). */
export function challengeSigningInput(
  nonce: Uint8Array,
  timestampMs: bigint,
  status: Uint8Array,
): Uint8Array {
  if (nonce.length !== CHALLENGE_NONCE_BYTES) {
    throw new RangeError(`a challenge nonce has ${CHALLENGE_NONCE_BYTES} bytes, got ${nonce.length}`);
  }
  if (timestampMs < 0n || timestampMs > 0xffff_ffff_ffff_ffffn) {
    throw new RangeError(`timestamp_ms ${timestampMs} does not fit an unsigned 64-bit integer`);
  }
  if (status.length > 0xffff_ffff) throw new RangeError("status is longer than 2^32-1 bytes");
  const domain = new TextEncoder().encode(CHALLENGE_DOMAIN);
  const out = new Uint8Array(domain.length + 1 + CHALLENGE_NONCE_BYTES + 8 + 4 + status.length);
  const view = new DataView(out.buffer);
  out.set(domain, 0);
  let offset = domain.length + 1; // the 0x00 separator is already zero
  out.set(nonce, offset);
  offset += CHALLENGE_NONCE_BYTES;
  view.setBigUint64(offset, timestampMs);
  offset += 8;
  view.setUint32(offset, status.length);
  offset += 4;
  out.set(status, offset);
  return out;
}

/** The canonical bytes of a challenge status (models sorted by id). */
export function encodeChallengeStatus(status: Omit<ChallengeStatusDocument, "format">): Uint8Array {
  const models = [...status.models]
    .map((m) => ({ id: m.id, weight_sha256: m.weight_sha256 }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const doc: ChallengeStatusDocument = {
    binary_sha256: status.binary_sha256,
    format: CHALLENGE_STATUS_FORMAT,
    models,
    secure_boot: status.secure_boot,
    sip: status.sip,
  };
  return new TextEncoder().encode(canonicalJson(doc));
}

/** The canonical bytes of an attestation blob. */
export function encodeAttestation(doc: Omit<AttestationDocument, "format">): Uint8Array {
  return new TextEncoder().encode(canonicalJson({ ...doc, format: ATTESTATION_FORMAT }));
}

/** The SHA-256 of a hardware serial as the blob carries it ("" for an unknown serial). */
export const SERIAL_HASH_PREFIX = "darkbloom-serial-v1:";
