import { type Infer, s } from "../schema.js";
import { SEMVER_PATTERN } from "./common-types.js";

// `spec.config`: the coordinator's serving settings a platform team tunes, each one of `serve`'s
// DARKBLOOM_* environment variables (services/coordinator/src/cli/serve*.ts), with the bounds of its
// CLI parser, so that a value the coordinator would refuse at start is refused by the API server
// instead of crash-looping the pods. What the operator owns (listen address and ports, data
// directory, database URL, admin key, peer token, advertise URL, metrics listener, drain timeout) is
// not here. Every field is optional: absent, the coordinator's default applies.

/**
 * The CLI's `duration`, less two forms: days (`d`), which CEL's duration() (Go syntax) does not read
 * and the rules below compare with, and leading zeros. Every value accepted here the CLI accepts.
 */
const DURATION = "[1-9][0-9]{0,8}(ms|s|m|h)";
const DURATION_SUFFIX = " A duration such as 500ms, 30s, 5m or 1h.";

function duration(description: string) {
  return s.string({ description: description + DURATION_SUFFIX, pattern: `^${DURATION}$`, maxLength: 11 });
}

/** The periodic tasks that "0" turns off. */
function intervalOrOff(description: string) {
  return s.string({
    description: description + DURATION_SUFFIX,
    pattern: `^(0|${DURATION})$`,
    maxLength: 11,
  });
}

/** The CLI's `wholeNumber(max)` (minimum 0) and `positiveInteger(max)` (minimum 1). */
function count(minimum: 0 | 1, maximum: number, description: string) {
  return s.integer({ description, minimum, maximum, format: "int32" });
}

const SIZE_UNITS = "(B|KiB|MiB|GiB)";

/** The CLI's `byteSize(max)`: a number of bytes with an optional binary unit, from 1 byte to `max`. */
function byteSize(max: number, maxText: string, description: string) {
  // CEL has no size parser: strip the unit, scale, and compare as a double (13 digits times GiB
  // would overflow an int).
  const value =
    "double(self.replace('GiB', '').replace('MiB', '').replace('KiB', '').replace('B', ''))" +
    " * (self.endsWith('GiB') ? 1073741824.0 : self.endsWith('MiB') ? 1048576.0" +
    " : self.endsWith('KiB') ? 1024.0 : 1.0)";
  return s.string({
    description: `${description} A size such as 65536, 512KiB or 1MiB, at most ${maxText}.`,
    pattern: `^[1-9][0-9]{0,12}${SIZE_UNITS}?$`,
    maxLength: 16,
    rules: [{ rule: `${value} <= ${max}.0`, message: `must be at most ${maxText}` }],
  });
}

export const TRUST_LEVELS = ["none", "self_signed", "tpm", "hardware"] as const;
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** Defaults of the coordinator (config.ts) that the cross-field rules fall back on. */
const INSTANCE_HEARTBEAT_DEFAULT = "5s";
const INSTANCE_STALE_DEFAULT = "30s";

const stale = `duration(has(self.instanceStale) ? self.instanceStale : '${INSTANCE_STALE_DEFAULT}')`;

export const coordinatorConfigSchema = s.object(
  {
    logLevel: s.enum(LOG_LEVELS, { description: "Log level of the coordinator (default info)." }),
    minTrust: s.enum(TRUST_LEVELS, {
      description: "Lowest provider trust level routed to (DARKBLOOM_MIN_TRUST, default self_signed).",
    }),
    minProviderVersion: s.string({
      description:
        "Provider daemons older than this semantic version are not routed to; active releases may raise it.",
      pattern: `^${SEMVER_PATTERN}$`,
      maxLength: 256,
    }),
    hardwareKeys: s.array(
      s.string({
        description: "A hex SEC1 P-256 public key: 130 hex digits starting 04.",
        pattern: "^04[0-9a-fA-F]{128}$",
        maxLength: 130,
      }),
      {
        description: "Secure Enclave public keys enrolled as hardware-bound.",
        maxItems: 1024,
        listType: "set",
      },
    ),
    heartbeatInterval: duration(
      "Interval providers are told to heartbeat at; three missed evict a provider (default 5s).",
    ),
    queueDepth: count(
      0,
      1_000_000,
      "Requests that may wait per model when every provider is busy (default 1024).",
    ),
    queueTimeout: duration("How long a request waits for a provider before 503 (default 30s)."),
    maxRetries: count(0, 10, "Invisible retries on another provider before the first byte (default 3)."),
    firstTokenTimeout: duration(
      "A provider with no first token this long after dispatch has failed (default 120s).",
    ),
    interTokenTimeout: duration("A provider silent this long between two chunks has failed (default 60s)."),
    keepAliveInterval: duration("An SSE comment is written when a stream is silent this long (default 15s)."),
    rateLimit: count(0, 1_000_000, "Inference requests per second per account, 0 for no limit (default 50)."),
    rateLimitBurst: count(1, 1_000_000, "Burst of inference requests per account (default 100)."),
    instanceHeartbeat: duration(
      "How often a replica records it is alive and sweeps orphaned reservations (default 5s); shorter than instanceStale.",
    ),
    instanceStale: duration(
      "A replica silent this long is presumed dead and its reservations refunded (default 30s).",
    ),
    directoryFlush: duration(
      "A provider's free slots, trust and drain state reach the cluster's provider directory at most this often (default 1s).",
    ),
    directoryPoll: duration(
      "The provider directory is re-read this often when no change is announced (default: 5s, or half of instanceStale if less); shorter than instanceStale.",
    ),
    rebalanceInterval: intervalOrOff(
      "A replica holding more than its share of the providers asks one idle provider this often to reconnect elsewhere; 0 for never (default 30s).",
    ),
    placementInterval: intervalOrOff(
      "How often models are loaded onto providers ahead of demand (and unloaded under memory pressure); 0 for never (default 15s).",
    ),
    placementCooldown: duration(
      "No load or unload of a model on a provider sooner than this after the last; a model unused this long may be unloaded (default 5m).",
    ),
    tokenizerThreads: count(
      0,
      64,
      "Worker threads running llama.cpp's tokenizer for catalog vocabularies; 0 runs it on the event loop (default: cores - 1, 1 to 4).",
    ),
    headerTimeout: duration(
      "A connection's request headers must be complete this long after it opens (default 20s).",
    ),
    bodyTimeout: duration(
      "A request body must be complete this long after its headers; 408 after (default 60s).",
    ),
    idleTimeout: duration(
      "A keep-alive connection or HTTP/2 session with no request this long is closed (default 65s).",
    ),
    sendTimeout: duration("A response the consumer does not read for this long is cut (default 60s)."),
    maxConnections: count(
      1,
      1_000_000,
      "Open connections in total; more are closed on arrival (default 10000).",
    ),
    maxConnectionsPerAddress: count(
      0,
      1_000_000,
      "Open connections per client address (IPv6 /64), 0 for no cap (default 256).",
    ),
    maxStreamsPerConnection: count(1, 1_000_000, "Concurrent HTTP/2 streams per connection (default 256)."),
    maxResponseBuffer: byteSize(
      1024 ** 3,
      "1GiB",
      "Bytes a response may hold for a slow consumer before it is cut (default 1MiB).",
    ),
    maxResponseBytes: byteSize(
      16 * 1024 ** 3,
      "16GiB",
      "Bytes one completion response may reach before it is cut (default 64MiB).",
    ),
    metricsMaxModels: count(
      1,
      10_000,
      'Distinct model labels in the metrics; other models count as "other" (default 256).',
    ),
    authFailureRate: count(
      0,
      1_000_000,
      "Failed API-key, admin-key or metrics-token checks a client address earns back per second, 0 for no limit (default 1).",
    ),
    authFailureBurst: count(
      1,
      1_000_000,
      "Failed credential checks a client address may make in a burst before 429 (default 20).",
    ),
    authFailureAddresses: count(
      1,
      10_000_000,
      "Client addresses the failed-auth limiter remembers at once (default 100000).",
    ),
    trustProxy: count(
      0,
      10,
      "Proxies in front that append X-Forwarded-For; per-address limits then count the client they name (default 0: the header is ignored).",
    ),
  },
  {
    description:
      "Serving settings of the coordinator, passed as its DARKBLOOM_* environment variables; absent ones keep the coordinator's defaults.",
    // The coordinator refuses to start otherwise (serve.ts); absent fields are compared at their defaults.
    rules: [
      {
        rule: `duration(has(self.instanceHeartbeat) ? self.instanceHeartbeat : '${INSTANCE_HEARTBEAT_DEFAULT}') < ${stale}`,
        message: `instanceHeartbeat (default ${INSTANCE_HEARTBEAT_DEFAULT}) must be shorter than instanceStale (default ${INSTANCE_STALE_DEFAULT})`,
      },
      {
        rule: `!has(self.directoryPoll) || duration(self.directoryPoll) < ${stale}`,
        message: `directoryPoll must be shorter than instanceStale (default ${INSTANCE_STALE_DEFAULT})`,
      },
    ],
  },
);

export type CoordinatorConfigSpec = Infer<typeof coordinatorConfigSchema>;
