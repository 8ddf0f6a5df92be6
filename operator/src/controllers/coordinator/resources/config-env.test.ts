import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import type { CoordinatorConfigSpec } from "../../../api/v1alpha1/coordinator-config-types.js";
import { coordinatorConfigSchema } from "../../../api/v1alpha1/coordinator-config-types.js";
import { storedCoordinator } from "../../../testing/coordinator-fixture.js";
import { CONFIG_ENV, configEnv, coordinatorEnv } from "./config-env.js";

/** Every field set (Required: a field added to the schema must be added here). */
const FULL: Required<CoordinatorConfigSpec> = {
  logLevel: "debug",
  minTrust: "hardware",
  minProviderVersion: "1.2.0",
  hardwareKeys: [`04${"a".repeat(128)}`, `04${"b".repeat(128)}`],
  heartbeatInterval: "5s",
  queueDepth: 0,
  queueTimeout: "30s",
  maxRetries: 3,
  firstTokenTimeout: "2m",
  interTokenTimeout: "60s",
  keepAliveInterval: "15s",
  rateLimit: 50,
  rateLimitBurst: 100,
  instanceHeartbeat: "2s",
  instanceStale: "20s",
  directoryFlush: "500ms",
  directoryPoll: "5s",
  rebalanceInterval: "0",
  placementInterval: "15s",
  placementCooldown: "5m",
  tokenizerThreads: 2,
  headerTimeout: "20s",
  bodyTimeout: "60s",
  idleTimeout: "65s",
  sendTimeout: "60s",
  maxConnections: 10000,
  maxConnectionsPerAddress: 256,
  maxStreamsPerConnection: 128,
  maxResponseBuffer: "1MiB",
  maxResponseBytes: "64MiB",
  metricsMaxModels: 256,
  authFailureRate: 1,
  authFailureBurst: 20,
  authFailureAddresses: 100000,
  trustProxy: 1,
};

const EXPECTED: [string, string][] = [
  ["DARKBLOOM_MIN_TRUST", "hardware"],
  ["DARKBLOOM_MIN_PROVIDER_VERSION", "1.2.0"],
  ["DARKBLOOM_HARDWARE_KEYS", `04${"a".repeat(128)},04${"b".repeat(128)}`],
  ["DARKBLOOM_HEARTBEAT_INTERVAL", "5s"],
  ["DARKBLOOM_QUEUE_DEPTH", "0"],
  ["DARKBLOOM_QUEUE_TIMEOUT", "30s"],
  ["DARKBLOOM_MAX_RETRIES", "3"],
  ["DARKBLOOM_FIRST_TOKEN_TIMEOUT", "2m"],
  ["DARKBLOOM_INTER_TOKEN_TIMEOUT", "60s"],
  ["DARKBLOOM_KEEP_ALIVE_INTERVAL", "15s"],
  ["DARKBLOOM_RATE_LIMIT", "50"],
  ["DARKBLOOM_RATE_LIMIT_BURST", "100"],
  ["DARKBLOOM_INSTANCE_HEARTBEAT", "2s"],
  ["DARKBLOOM_INSTANCE_STALE", "20s"],
  ["DARKBLOOM_DIRECTORY_FLUSH", "500ms"],
  ["DARKBLOOM_DIRECTORY_POLL", "5s"],
  ["DARKBLOOM_REBALANCE_INTERVAL", "0"],
  ["DARKBLOOM_PLACEMENT_INTERVAL", "15s"],
  ["DARKBLOOM_PLACEMENT_COOLDOWN", "5m"],
  ["DARKBLOOM_TOKENIZER_THREADS", "2"],
  ["DARKBLOOM_HEADER_TIMEOUT", "20s"],
  ["DARKBLOOM_BODY_TIMEOUT", "60s"],
  ["DARKBLOOM_IDLE_TIMEOUT", "65s"],
  ["DARKBLOOM_SEND_TIMEOUT", "60s"],
  ["DARKBLOOM_MAX_CONNECTIONS", "10000"],
  ["DARKBLOOM_MAX_CONNECTIONS_PER_ADDRESS", "256"],
  ["DARKBLOOM_MAX_STREAMS_PER_CONNECTION", "128"],
  ["DARKBLOOM_MAX_RESPONSE_BUFFER", "1MiB"],
  ["DARKBLOOM_MAX_RESPONSE_BYTES", "64MiB"],
  ["DARKBLOOM_METRICS_MAX_MODELS", "256"],
  ["DARKBLOOM_AUTH_FAILURE_RATE", "1"],
  ["DARKBLOOM_AUTH_FAILURE_BURST", "20"],
  ["DARKBLOOM_AUTH_FAILURE_ADDRESSES", "100000"],
  ["DARKBLOOM_TRUST_PROXY", "1"],
];

describe("config → environment", () => {
  it("maps every config field but logLevel (a flag) to its variable, in a fixed order", () => {
    expect(configEnv(FULL)).toEqual(EXPECTED.map(([name, value]) => ({ name, value })));
    const fields = Object.keys(coordinatorConfigSchema.node.properties ?? {}).filter((f) => f !== "logLevel");
    expect(Object.keys(CONFIG_ENV).sort()).toEqual(fields.sort());
  });

  it("writes the set fields only, whatever order they were given in", () => {
    expect(configEnv(undefined)).toEqual([]);
    expect(configEnv({})).toEqual([]);
    expect(configEnv({ trustProxy: 2, logLevel: "warn", minTrust: "none" })).toEqual([
      { name: "DARKBLOOM_MIN_TRUST", value: "none" },
      { name: "DARKBLOOM_TRUST_PROXY", value: "2" },
    ]);
  });

  it("names only variables that `coordinator serve` reads", async () => {
    const cli = new URL("../../../../../services/coordinator/src/cli/", import.meta.url);
    const sources = await Promise.all(
      ["serve.ts", "serve-tuning.ts", "serve-access.ts"].map((file) => readFile(new URL(file, cli), "utf8")),
    );
    const env = coordinatorEnv(storedCoordinator({ config: FULL }), {
      peerSecretName: "main-peer",
      previousPeerToken: true,
    });
    expect(env.map((v) => v.name)).toContain("DARKBLOOM_PREVIOUS_PEER_TOKEN");
    for (const { name } of env.filter((v) => v.name.startsWith("DARKBLOOM_") || v.name === "DATABASE_URL")) {
      const read = (source: string) => source.includes(`"${name}"`) || source.includes(`env.${name}`);
      expect(sources.some(read), name).toBe(true);
    }
  });

  it("puts the operator's variables first, POD_IP before the values that expand it", () => {
    const coordinator = storedCoordinator({ drainSeconds: 45, config: { queueDepth: 7 } });
    expect(coordinatorEnv(coordinator, { peerSecretName: "main-peer" })).toEqual([
      { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
      { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
      { name: "DATABASE_URL", valueFrom: { secretKeyRef: { name: "db", key: "url" } } },
      { name: "DARKBLOOM_ADMIN_KEY", valueFrom: { secretKeyRef: { name: "admin", key: "admin-key" } } },
      { name: "DARKBLOOM_PEER_TOKEN", valueFrom: { secretKeyRef: { name: "main-peer", key: "token" } } },
      { name: "DARKBLOOM_ADVERTISE_URL", value: "http://$(POD_IP):8080" },
      { name: "DARKBLOOM_DRAIN_TIMEOUT", value: "45s" },
      { name: "DARKBLOOM_QUEUE_DEPTH", value: "7" },
    ]);
  });

  it("reads the previous peer token, optionally, only while the peer Secret holds one", () => {
    const coordinator = storedCoordinator();
    const names = (previousPeerToken: boolean) =>
      coordinatorEnv(coordinator, { peerSecretName: "main-peer", previousPeerToken }).map((v) => v.name);
    expect(names(false)).not.toContain("DARKBLOOM_PREVIOUS_PEER_TOKEN");
    const env = coordinatorEnv(coordinator, { peerSecretName: "main-peer", previousPeerToken: true });
    const at = env.findIndex((v) => v.name === "DARKBLOOM_PREVIOUS_PEER_TOKEN");
    expect(env[at - 1]?.name).toBe("DARKBLOOM_PEER_TOKEN");
    expect(env[at]).toEqual({
      name: "DARKBLOOM_PREVIOUS_PEER_TOKEN",
      valueFrom: { secretKeyRef: { name: "main-peer", key: "previous", optional: true } },
    });
  });
});
