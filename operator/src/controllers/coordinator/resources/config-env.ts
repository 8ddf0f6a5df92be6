import type { V1EnvVar } from "@kubernetes/client-node";
import type { CoordinatorConfigSpec } from "../../../api/v1alpha1/coordinator-config-types.js";
import type { Coordinator } from "../../../api/v1alpha1/coordinator-types.js";
import { COORDINATOR_HTTP_PORT } from "../../../api/v1alpha1/coordinator-types.js";
import { PEER_PREVIOUS_TOKEN_KEY, PEER_TOKEN_KEY } from "./peer-secret.js";

/**
 * Each `spec.config` field's environment variable of `coordinator serve`, in the order the env is
 * written (a fixed order: a reordered env would roll the pods for nothing). The mapped type makes a
 * field added to the schema without a variable a compile error. `logLevel` is not here: `serve` reads
 * it from its `--log-level` flag only (see deployment.ts).
 */
export const CONFIG_ENV: { readonly [K in keyof Required<Omit<CoordinatorConfigSpec, "logLevel">>]: string } =
  {
    minTrust: "DARKBLOOM_MIN_TRUST",
    minProviderVersion: "DARKBLOOM_MIN_PROVIDER_VERSION",
    hardwareKeys: "DARKBLOOM_HARDWARE_KEYS",
    heartbeatInterval: "DARKBLOOM_HEARTBEAT_INTERVAL",
    queueDepth: "DARKBLOOM_QUEUE_DEPTH",
    queueTimeout: "DARKBLOOM_QUEUE_TIMEOUT",
    maxRetries: "DARKBLOOM_MAX_RETRIES",
    firstTokenTimeout: "DARKBLOOM_FIRST_TOKEN_TIMEOUT",
    interTokenTimeout: "DARKBLOOM_INTER_TOKEN_TIMEOUT",
    keepAliveInterval: "DARKBLOOM_KEEP_ALIVE_INTERVAL",
    rateLimit: "DARKBLOOM_RATE_LIMIT",
    rateLimitBurst: "DARKBLOOM_RATE_LIMIT_BURST",
    instanceHeartbeat: "DARKBLOOM_INSTANCE_HEARTBEAT",
    instanceStale: "DARKBLOOM_INSTANCE_STALE",
    directoryFlush: "DARKBLOOM_DIRECTORY_FLUSH",
    directoryPoll: "DARKBLOOM_DIRECTORY_POLL",
    rebalanceInterval: "DARKBLOOM_REBALANCE_INTERVAL",
    placementInterval: "DARKBLOOM_PLACEMENT_INTERVAL",
    placementCooldown: "DARKBLOOM_PLACEMENT_COOLDOWN",
    tokenizerThreads: "DARKBLOOM_TOKENIZER_THREADS",
    headerTimeout: "DARKBLOOM_HEADER_TIMEOUT",
    bodyTimeout: "DARKBLOOM_BODY_TIMEOUT",
    idleTimeout: "DARKBLOOM_IDLE_TIMEOUT",
    sendTimeout: "DARKBLOOM_SEND_TIMEOUT",
    maxConnections: "DARKBLOOM_MAX_CONNECTIONS",
    maxConnectionsPerAddress: "DARKBLOOM_MAX_CONNECTIONS_PER_ADDRESS",
    maxStreamsPerConnection: "DARKBLOOM_MAX_STREAMS_PER_CONNECTION",
    maxResponseBuffer: "DARKBLOOM_MAX_RESPONSE_BUFFER",
    maxResponseBytes: "DARKBLOOM_MAX_RESPONSE_BYTES",
    metricsMaxModels: "DARKBLOOM_METRICS_MAX_MODELS",
    authFailureRate: "DARKBLOOM_AUTH_FAILURE_RATE",
    authFailureBurst: "DARKBLOOM_AUTH_FAILURE_BURST",
    authFailureAddresses: "DARKBLOOM_AUTH_FAILURE_ADDRESSES",
    trustProxy: "DARKBLOOM_TRUST_PROXY",
  };

/** The DARKBLOOM_* variables of the fields that are set; lists are comma-separated, as serve reads them. */
export function configEnv(config: CoordinatorConfigSpec | undefined): V1EnvVar[] {
  const env: V1EnvVar[] = [];
  for (const [field, name] of Object.entries(CONFIG_ENV)) {
    const value = config?.[field as keyof typeof CONFIG_ENV];
    if (value === undefined) continue;
    env.push({ name, value: Array.isArray(value) ? value.join(",") : String(value) });
  }
  return env;
}

function secretEnv(name: string, secret: string, key: string, optional?: true): V1EnvVar {
  return { name, valueFrom: { secretKeyRef: { name: secret, key, ...(optional ? { optional } : {}) } } };
}

/** Where the pods' peer tokens come from. */
export interface PeerEnvOptions {
  /** The peer Secret's name. */
  peerSecretName: string;
  /**
   * The Secret holds a previous token (a rotation is rolling out): the pods accept it too. Only
   * then is the variable there, so that a Coordinator that never rotates keeps its pod template
   * (and an operator upgrade rolls nothing).
   */
  previousPeerToken?: boolean | undefined;
}

function fieldEnv(name: string, fieldPath: string): V1EnvVar {
  return { name, valueFrom: { fieldRef: { fieldPath } } };
}

/**
 * The coordinator container's whole environment: what the operator owns, then `spec.config`'s.
 * POD_IP comes first: `$(POD_IP)` in a later value (and in the args) expands only to variables
 * defined before it.
 */
export function coordinatorEnv(coordinator: Coordinator, options: PeerEnvOptions): V1EnvVar[] {
  const { spec } = coordinator;
  return [
    fieldEnv("POD_IP", "status.podIP"),
    fieldEnv("POD_NAME", "metadata.name"),
    secretEnv("DATABASE_URL", spec.database.secretRef.name, spec.database.secretRef.key),
    secretEnv("DARKBLOOM_ADMIN_KEY", spec.adminKeySecretRef.name, spec.adminKeySecretRef.key),
    secretEnv("DARKBLOOM_PEER_TOKEN", options.peerSecretName, PEER_TOKEN_KEY),
    // Optional: a container restarting after the controller dropped the previous token (every
    // replica then runs the new one) starts without it instead of failing.
    ...(options.previousPeerToken
      ? [secretEnv("DARKBLOOM_PREVIOUS_PEER_TOKEN", options.peerSecretName, PEER_PREVIOUS_TOKEN_KEY, true)]
      : []),
    // Peers dial the pod directly: forwarding must reach the replica that holds the stream.
    // Where the other replicas forward to: the peer port when there is one.
    {
      name: "DARKBLOOM_ADVERTISE_URL",
      value: `http://$(POD_IP):${coordinator.spec.peerPort ?? COORDINATOR_HTTP_PORT}`,
    },
    { name: "DARKBLOOM_DRAIN_TIMEOUT", value: `${spec.drainSeconds}s` },
    ...configEnv(spec.config),
  ];
}
