export { type BackoffPolicy, backoffDelay, backoffPolicy } from "./backoff.js";
export { Channel, ChannelClosedError } from "./channel.js";
export {
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  MISSED_HEARTBEATS_BEFORE_EVICTION,
  PROTOCOL_VERSION,
  RECONNECT_BACKOFF,
} from "./constants.js";
export { parseTrustLevelName, type TrustLevelName, trustLevelName } from "./trust-level.js";
