import { type Command, Option } from "commander";
import type { CoordinatorConfig } from "../config.js";
import { byteSize, duration, fromEnv, positiveInteger, wholeNumber } from "./parse.js";

/** A serving limit `serve` takes as a flag or an environment variable (the flag wins). */
interface Tuning {
  key: TunableKey;
  flag: string;
  env: string;
  arg: string;
  description: string;
  parse: (value: string) => number;
}

type TunableKey = keyof Pick<
  CoordinatorConfig,
  | "heartbeatIntervalMs"
  | "queueDepthPerModel"
  | "queueTimeoutMs"
  | "maxRetries"
  | "firstTokenTimeoutMs"
  | "interTokenTimeoutMs"
  | "keepAliveIntervalMs"
  | "rateLimitPerSecond"
  | "rateLimitBurst"
  | "instanceHeartbeatMs"
  | "instanceStaleMs"
  | "directoryFlushMs"
  | "directoryPollMs"
  | "rebalanceIntervalMs"
  | "placementIntervalMs"
  | "placementCooldownMs"
  | "tokenizerThreads"
  | "drainTimeoutMs"
  // Connection and response limits.
  | "headerTimeoutMs"
  | "bodyTimeoutMs"
  | "idleTimeoutMs"
  | "sendTimeoutMs"
  | "maxConnections"
  | "maxConnectionsPerAddress"
  | "maxStreamsPerConnection"
  | "maxResponseBufferBytes"
  | "maxResponseBytes"
>;

/** Defaults are CoordinatorConfig's (see resolveConfig); durations take units: 500ms, 30s, 5m. */
const TUNINGS: readonly Tuning[] = [
  {
    key: "heartbeatIntervalMs",
    flag: "--heartbeat-interval",
    env: "DARKBLOOM_HEARTBEAT_INTERVAL",
    arg: "<duration>",
    description: "interval providers are told to heartbeat at; 3 missed evict (default 5s)",
    parse: duration,
  },
  {
    key: "queueDepthPerModel",
    flag: "--queue-depth",
    env: "DARKBLOOM_QUEUE_DEPTH",
    arg: "<n>",
    description: "requests that may wait per model when every provider is busy (default 1024)",
    parse: wholeNumber(1_000_000),
  },
  {
    key: "queueTimeoutMs",
    flag: "--queue-timeout",
    env: "DARKBLOOM_QUEUE_TIMEOUT",
    arg: "<duration>",
    description: "how long a request waits for a provider before 503 (default 30s)",
    parse: duration,
  },
  {
    key: "maxRetries",
    flag: "--max-retries",
    env: "DARKBLOOM_MAX_RETRIES",
    arg: "<n>",
    description: "invisible retries on another provider before the first byte (default 3)",
    parse: wholeNumber(10),
  },
  {
    key: "firstTokenTimeoutMs",
    flag: "--first-token-timeout",
    env: "DARKBLOOM_FIRST_TOKEN_TIMEOUT",
    arg: "<duration>",
    description: "a provider with no first token this long after dispatch has failed (default 120s)",
    parse: duration,
  },
  {
    key: "interTokenTimeoutMs",
    flag: "--inter-token-timeout",
    env: "DARKBLOOM_INTER_TOKEN_TIMEOUT",
    arg: "<duration>",
    description: "a provider silent this long between two chunks has failed (default 60s)",
    parse: duration,
  },
  {
    key: "keepAliveIntervalMs",
    flag: "--keep-alive-interval",
    env: "DARKBLOOM_KEEP_ALIVE_INTERVAL",
    arg: "<duration>",
    description: "an SSE comment is written when a stream is silent this long (default 15s)",
    parse: duration,
  },
  {
    key: "rateLimitPerSecond",
    flag: "--rate-limit",
    env: "DARKBLOOM_RATE_LIMIT",
    arg: "<per-second>",
    description: "inference requests per second per account, 0 for no limit (default 50)",
    parse: wholeNumber(1_000_000),
  },
  {
    key: "rateLimitBurst",
    flag: "--rate-limit-burst",
    env: "DARKBLOOM_RATE_LIMIT_BURST",
    arg: "<n>",
    description: "burst of inference requests per account (default 100)",
    parse: positiveInteger(1_000_000),
  },
  {
    key: "instanceHeartbeatMs",
    flag: "--instance-heartbeat",
    env: "DARKBLOOM_INSTANCE_HEARTBEAT",
    arg: "<duration>",
    description:
      "how often this coordinator records it is alive and sweeps orphaned reservations (default 5s)",
    parse: duration,
  },
  {
    key: "instanceStaleMs",
    flag: "--instance-stale",
    env: "DARKBLOOM_INSTANCE_STALE",
    arg: "<duration>",
    description:
      "a coordinator silent this long is presumed dead; its reservations are refunded (default 30s)",
    parse: duration,
  },
  {
    key: "directoryFlushMs",
    flag: "--directory-flush",
    env: "DARKBLOOM_DIRECTORY_FLUSH",
    arg: "<duration>",
    description:
      "a provider's free slots, trust and drain state reach the cluster's provider directory at most this often (default 1s)",
    parse: duration,
  },
  {
    key: "directoryPollMs",
    flag: "--directory-poll",
    env: "DARKBLOOM_DIRECTORY_POLL",
    arg: "<duration>",
    description: "the provider directory is re-read this often when no change is announced (default 5s)",
    parse: duration,
  },
  {
    key: "rebalanceIntervalMs",
    flag: "--rebalance-interval",
    env: "DARKBLOOM_REBALANCE_INTERVAL",
    arg: "<duration>",
    description:
      "a replica holding more than its share of the cluster's providers asks one idle provider this " +
      "often to reconnect elsewhere, 0 for never (default 30s)",
    parse: (value) => (value === "0" ? 0 : duration(value)),
  },
  {
    key: "placementIntervalMs",
    flag: "--placement-interval",
    env: "DARKBLOOM_PLACEMENT_INTERVAL",
    arg: "<duration>",
    description:
      "how often models are loaded onto providers ahead of demand (and unloaded under memory pressure), 0 for never (default 15s)",
    parse: (value) => (value === "0" ? 0 : duration(value)),
  },
  {
    key: "placementCooldownMs",
    flag: "--placement-cooldown",
    env: "DARKBLOOM_PLACEMENT_COOLDOWN",
    arg: "<duration>",
    description:
      "no load or unload of a model on a provider sooner than this after the last, and a model unused this long may be unloaded (default 5m)",
    parse: duration,
  },
  {
    key: "tokenizerThreads",
    flag: "--tokenizer-threads",
    env: "DARKBLOOM_TOKENIZER_THREADS",
    arg: "<n>",
    description:
      "worker threads that run llama.cpp's tokenizer for catalog vocabularies: the reference the event loop's exact port is checked against, and the counter of vocabularies the port does not cover; 0 runs it on the event loop (default: cores - 1, 1 to 4)",
    parse: wholeNumber(64),
  },
  {
    key: "drainTimeoutMs",
    flag: "--drain-timeout",
    env: "DARKBLOOM_DRAIN_TIMEOUT",
    arg: "<duration>",
    description:
      "on SIGTERM, how long providers are given to reconnect elsewhere and in-flight requests to finish (default 10s)",
    parse: duration,
  },

  // Connection and response limits: slow and greedy clients (docs/ARCHITECTURE.md, "Connection limits").
  {
    key: "headerTimeoutMs",
    flag: "--header-timeout",
    env: "DARKBLOOM_HEADER_TIMEOUT",
    arg: "<duration>",
    description: "a connection's request headers must be complete this long after it opens (default 20s)",
    parse: duration,
  },
  {
    key: "bodyTimeoutMs",
    flag: "--body-timeout",
    env: "DARKBLOOM_BODY_TIMEOUT",
    arg: "<duration>",
    description: "a request body must be complete this long after its headers; 408 after (default 60s)",
    parse: duration,
  },
  {
    key: "idleTimeoutMs",
    flag: "--idle-timeout",
    env: "DARKBLOOM_IDLE_TIMEOUT",
    arg: "<duration>",
    description:
      "a keep-alive connection or HTTP/2 session with no request this long is closed (default 65s)",
    parse: duration,
  },
  {
    key: "sendTimeoutMs",
    flag: "--send-timeout",
    env: "DARKBLOOM_SEND_TIMEOUT",
    arg: "<duration>",
    description: "a response the consumer does not read for this long is cut (default 60s)",
    parse: duration,
  },
  {
    key: "maxConnections",
    flag: "--max-connections",
    env: "DARKBLOOM_MAX_CONNECTIONS",
    arg: "<n>",
    description: "open connections in total; more are closed on arrival (default 10000)",
    parse: positiveInteger(1_000_000),
  },
  {
    key: "maxConnectionsPerAddress",
    flag: "--max-connections-per-address",
    env: "DARKBLOOM_MAX_CONNECTIONS_PER_ADDRESS",
    arg: "<n>",
    description: "open connections per client address (IPv6 /64), 0 for no cap (default 256)",
    parse: wholeNumber(1_000_000),
  },
  {
    key: "maxStreamsPerConnection",
    flag: "--max-streams-per-connection",
    env: "DARKBLOOM_MAX_STREAMS_PER_CONNECTION",
    arg: "<n>",
    description: "concurrent HTTP/2 streams per connection (default 256)",
    parse: positiveInteger(1_000_000),
  },
  {
    key: "maxResponseBufferBytes",
    flag: "--max-response-buffer",
    env: "DARKBLOOM_MAX_RESPONSE_BUFFER",
    arg: "<size>",
    description: "bytes a response may hold for a slow consumer before it is cut (default 1MiB)",
    parse: byteSize(1024 ** 3),
  },
  {
    key: "maxResponseBytes",
    flag: "--max-response-bytes",
    env: "DARKBLOOM_MAX_RESPONSE_BYTES",
    arg: "<size>",
    description: "bytes one completion response may reach before it is cut (default 64MiB)",
    parse: byteSize(16 * 1024 ** 3),
  },
];

/** Adds the serving limits' flags to `serve`. */
export function addTuningOptions(command: Command): Command {
  for (const t of TUNINGS) {
    command.addOption(new Option(`${t.flag} ${t.arg}`, `${t.description} (env ${t.env})`).argParser(t.parse));
  }
  return command;
}

/** The limits set by flag or environment; absent ones keep CoordinatorConfig's defaults. */
export function tuningFrom(
  opts: Readonly<Record<string, unknown>>,
  env: Readonly<Record<string, string | undefined>>,
): Partial<Pick<CoordinatorConfig, TunableKey>> {
  const tuned: Partial<Pick<CoordinatorConfig, TunableKey>> = {};
  for (const t of TUNINGS) {
    const attribute = new Option(t.flag).attributeName();
    const value = opts[attribute];
    const resolved = typeof value === "number" ? value : fromEnv(env, t.env, t.parse);
    if (resolved !== undefined) tuned[t.key] = resolved;
  }
  return tuned;
}
