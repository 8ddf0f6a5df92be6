// The coordinator of a scale drill, in a process of its own so that its CPU and memory are its own.
// Usage (forked by the drills): coordinator-child.js <database-url> <heartbeat-interval-ms> [billing|no-billing]
// It answers "stats" (CPU, memory and peaks, registry size, heartbeats applied, evictions, event-loop
// delay, process warnings), "reset" (starts a new peak / event-loop window) and "stop".
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { createLogger, startCoordinator } from "@darkbloom/coordinator";
import { serveParent } from "./process-link.js";

export interface CoordinatorReady {
  url: string;
  apiKey: string;
  pid: number;
}

export type CoordinatorRequest = { type: "stats" } | { type: "reset" } | { type: "stop" };

export interface CoordinatorStats {
  /** process.cpuUsage() user + system, µs, since the process started. */
  cpuMicros: number;
  /** performance.timeOrigin + performance.now() when the figures were taken, ms. */
  atMs: number;
  rssBytes: number;
  heapUsedBytes: number;
  heapTotalBytes: number;
  externalBytes: number;
  /** Highest RSS and heap used sampled (every 100 ms) since the last reset. */
  rssPeakBytes: number;
  heapUsedPeakBytes: number;
  /** Providers in the registry now. */
  providers: number;
  /** Provider sessions open now. */
  sessions: number;
  /** Heartbeats applied since start (registry capacity events that moved a provider's lastHeartbeatAt). */
  heartbeats: number;
  /** Providers removed since start, by reason. */
  removed: Record<string, number>;
  /** Longest time since any connected provider's last heartbeat, now (ms). */
  maxHeartbeatAgeMs: number;
  /** Event-loop delay since the last reset (ms; sampled every 20 ms, so shorter stalls are missed). */
  eventLoopDelayP50Ms: number;
  eventLoopDelayP99Ms: number;
  eventLoopDelayMaxMs: number;
  /** Process warnings emitted since start (e.g. MaxListenersExceededWarning), "name: message". */
  warnings: string[];
}

const [databaseUrl, heartbeatArg, billingArg] = process.argv.slice(2);
const heartbeatIntervalMs = Number(heartbeatArg);
if (!databaseUrl || !(heartbeatIntervalMs > 0)) {
  process.stderr.write(
    "usage: coordinator-child.js <database-url> <heartbeat-interval-ms> [billing|no-billing]\n",
  );
  process.exit(64);
}

const warnings: string[] = [];
process.on("warning", (w) => warnings.push(`${w.name}: ${w.message}`));

const dataDir = await mkdtemp(join(tmpdir(), "darkbloom-scale-"));
const coordinator = await startCoordinator(
  {
    dataDir,
    databaseUrl,
    adminKey: "scale-admin-key",
    port: 0,
    heartbeatIntervalMs,
    rateLimitPerSecond: 0,
    queueDepthPerModel: 100_000,
    billingEnabled: billingArg === "billing",
    minTrustLevel: "none", // scripted providers carry no attestation
    // A fleet and its consumers simulated from one host: no per-address cap, room for every stream.
    maxConnectionsPerAddress: 0,
    maxConnections: 1_000_000,
    maxStreamsPerConnection: 100_000,
  },
  { logger: createLogger("warn") },
);
const { secret } = await coordinator.accounts.createAccount({
  name: "scale",
  initialCreditMicroUsd: 10n ** 12n,
});

let heartbeats = 0;
const seenHeartbeat = new WeakMap<object, number>();
const removed: Record<string, number> = {};
coordinator.registry.subscribe((e) => {
  if (e.kind === "capacity") {
    const at = e.provider.lastHeartbeatAt;
    if (seenHeartbeat.get(e.provider) !== at) {
      seenHeartbeat.set(e.provider, at);
      if (at !== e.provider.connectedAt) heartbeats++;
    }
  } else if (e.kind === "removed") {
    removed[e.reason] = (removed[e.reason] ?? 0) + 1;
  }
});

// The histogram records each sampling timer's whole period: the delay is what exceeds the resolution.
const LOOP_RESOLUTION_MS = 20;
const loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
const beyondResolution = (ns: number) => Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS);
loopDelay.enable();
let rssPeak = 0;
let heapPeak = 0;
const samplePeaks = () => {
  const m = process.memoryUsage();
  rssPeak = Math.max(rssPeak, m.rss);
  heapPeak = Math.max(heapPeak, m.heapUsed);
};
setInterval(samplePeaks, 100).unref();

function stats(): CoordinatorStats {
  samplePeaks();
  const m = process.memoryUsage();
  const cpu = process.cpuUsage();
  const now = Date.now();
  let maxAge = 0;
  for (const p of coordinator.registry.all()) maxAge = Math.max(maxAge, now - p.lastHeartbeatAt);
  return {
    cpuMicros: cpu.user + cpu.system,
    atMs: performance.timeOrigin + performance.now(),
    rssBytes: m.rss,
    heapUsedBytes: m.heapUsed,
    heapTotalBytes: m.heapTotal,
    externalBytes: m.external,
    rssPeakBytes: rssPeak,
    heapUsedPeakBytes: heapPeak,
    providers: coordinator.registry.size,
    sessions: coordinator.sessions.size,
    heartbeats,
    removed: { ...removed },
    maxHeartbeatAgeMs: maxAge,
    eventLoopDelayP50Ms: beyondResolution(loopDelay.percentile(50)),
    eventLoopDelayP99Ms: beyondResolution(loopDelay.percentile(99)),
    eventLoopDelayMaxMs: beyondResolution(loopDelay.max),
    warnings: [...warnings],
  };
}

serveParent<CoordinatorRequest, CoordinatorStats | undefined>(
  { url: coordinator.url, apiKey: secret, pid: process.pid } satisfies CoordinatorReady,
  async (request) => {
    switch (request.type) {
      case "stats":
        return stats();
      case "reset": {
        loopDelay.reset();
        const m = process.memoryUsage();
        rssPeak = m.rss;
        heapPeak = m.heapUsed;
        return undefined;
      }
      case "stop":
        await coordinator.close({ drainMs: 0 });
        await rm(dataDir, { recursive: true, force: true });
        setImmediate(() => process.exit(0));
        return undefined;
    }
  },
);
