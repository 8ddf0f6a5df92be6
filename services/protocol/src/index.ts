export {
  ATTESTATION_FORMAT,
  ATTESTATION_SIGNERS,
  type AttestationDocument,
  type AttestationSignerName,
  CHALLENGE_DOMAIN,
  CHALLENGE_NONCE_BYTES,
  CHALLENGE_STATUS_FORMAT,
  type ChallengeStatusDocument,
  canonicalJson,
  challengeSigningInput,
  encodeAttestation,
  encodeChallengeStatus,
  parseCanonicalJson,
  SECURITY_STATES,
  SERIAL_HASH_PREFIX,
  type SecurityState,
  type StatusModel,
  TPM_QUOTE_PCRS,
  tpmQuoteQualifyingData,
} from "./attestation.js";
export { type BackoffPolicy, backoffDelay, backoffPolicy } from "./backoff.js";
export { Channel, ChannelClosedError } from "./channel.js";
export { ChunkPayloadError, decodeChunkPayload, encodeChunkPayload } from "./chunk-payload.js";
export {
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  MISSED_HEARTBEATS_BEFORE_EVICTION,
  PROTOCOL_VERSION,
  RECONNECT_BACKOFF,
  USAGE_VERSION,
} from "./constants.js";
export { P256_PUBLIC_KEY_BYTES, p256PublicKeyFromRaw, rawP256PublicKey, verifyP256 } from "./p256.js";
export { compareSemver, isSemver, parseSemver, type SemVer } from "./semver.js";
export {
  parseTrustLevelName,
  TRUST_LEVEL_NAMES,
  type TrustLevelName,
  trustLevelName,
  trustRank,
} from "./trust-level.js";
