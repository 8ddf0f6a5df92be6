/** The provider stream protocol version this code speaks (Register.protocol_version). */
export const PROTOCOL_VERSION = 1;

/**
 * The usage semantics this code reports and checks (Register.usage_version): usage is the model's
 * tokenizer over the text (the rendered prompt, each choice's emitted text), not the tokens sampled.
 */
export const USAGE_VERSION = 1;

/** How often a provider sends a Heartbeat unless the RegisterAck says otherwise. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 5_000;

/** A provider that misses this many heartbeats in a row is evicted. */
export const MISSED_HEARTBEATS_BEFORE_EVICTION = 3;

/** Provider reconnect policy: exponential backoff from 1 s doubling to a 30 s cap, with jitter. */
export const RECONNECT_BACKOFF = { initialMs: 1_000, maxMs: 30_000, multiplier: 2, jitter: 0.2 } as const;
