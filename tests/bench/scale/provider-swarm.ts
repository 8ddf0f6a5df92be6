// A process hosting many simulated providers: real ScriptedProviders (Connect streams, Register with an
// X25519 key, heartbeats at the coordinator's interval, sealed chunks), their streams multiplexed over
// a few shared HTTP/2 connections. Forked by the drills; driven over IPC ("register", "stats", "stop").
import { ScriptedProvider, SharedConnection } from "@darkbloom/testing";
import { serveParent } from "./process-link.js";

/** Providers registered alike: machine ids `${prefix}-${i}`, the same models and batch size. */
export interface ProviderGroup {
  prefix: string;
  count: number;
  models: string[];
  maxBatch: number;
}

/** What every provider of the swarm answers: `tokens` tokens ("t0 ", "t1 ", …), paced. */
export interface PacedScript {
  tokens: number;
  firstTokenDelayMs: number;
  interTokenDelayMs: number;
}

export interface RegisterRequest {
  type: "register";
  baseUrl: string;
  groups: ProviderGroup[];
  script: PacedScript;
  /** Provider streams per shared HTTP/2 connection. */
  streamsPerConnection: number;
  /** Registrations in flight at once in this process. */
  registerConcurrency: number;
}

export type SwarmRequest = RegisterRequest | { type: "stats" } | { type: "stop" };

export interface RegisterReply {
  /** start() to RegisterAck, per provider that registered, ms. */
  latenciesMs: number[];
  failed: number;
  firstError: string | undefined;
  elapsedMs: number;
}

export interface SwarmStats {
  providers: number;
  connected: number;
  connections: number;
  heartbeatsSent: number;
  /** Sessions that ended other than by stop(). */
  disconnects: number;
  requestsCompleted: number;
  requestsFailed: number;
  cpuMicros: number;
  rssBytes: number;
}

const providers: ScriptedProvider[] = [];
const connections: SharedConnection[] = [];
let disconnects = 0;
let stopping = false;

function connectionFor(baseUrl: string, index: number, perConnection: number): SharedConnection {
  const slot = Math.floor(index / perConnection);
  while (connections.length <= slot) connections.push(new SharedConnection(baseUrl));
  return connections[slot] as SharedConnection;
}

async function register(r: RegisterRequest): Promise<RegisterReply> {
  const tokens = Array.from({ length: r.script.tokens }, (_, i) => `t${i} `);
  const script = () => ({
    tokens,
    firstTokenDelayMs: r.script.firstTokenDelayMs,
    interTokenDelayMs: r.script.interTokenDelayMs,
  });
  const batch: ScriptedProvider[] = [];
  for (const group of r.groups) {
    for (let i = 0; i < group.count; i++) {
      const p = new ScriptedProvider({
        baseUrl: r.baseUrl,
        connection: connectionFor(r.baseUrl, providers.length, r.streamsPerConnection),
        machineId: `${group.prefix}-${i}`,
        models: group.models.map((id) => ({ id, contextLength: 8192 })),
        maxBatch: group.maxBatch,
        recordRequests: false,
        script,
      });
      p.on("disconnected", (d) => {
        if (!stopping && d.reason !== "stopped") disconnects++;
      });
      providers.push(p);
      batch.push(p);
    }
  }
  const latenciesMs: number[] = [];
  let failed = 0;
  let firstError: string | undefined;
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < batch.length) {
      const p = batch[next++] as ScriptedProvider;
      const started = performance.now();
      try {
        await p.start();
        latenciesMs.push(performance.now() - started);
      } catch (e) {
        failed++;
        firstError ??= e instanceof Error ? e.message : String(e);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, r.registerConcurrency) }, worker));
  return { latenciesMs, failed, firstError, elapsedMs: performance.now() - t0 };
}

function stats(): SwarmStats {
  let connected = 0;
  let heartbeatsSent = 0;
  let requestsCompleted = 0;
  let requestsFailed = 0;
  for (const p of providers) {
    if (p.connected) connected++;
    heartbeatsSent += p.heartbeatsSent;
    requestsCompleted += p.requestsCompleted;
    requestsFailed += p.requestsFailed;
  }
  const cpu = process.cpuUsage();
  return {
    providers: providers.length,
    connected,
    connections: connections.length,
    heartbeatsSent,
    disconnects,
    requestsCompleted,
    requestsFailed,
    cpuMicros: cpu.user + cpu.system,
    rssBytes: process.memoryUsage().rss,
  };
}

serveParent<SwarmRequest, RegisterReply | SwarmStats | undefined>({ pid: process.pid }, async (request) => {
  switch (request.type) {
    case "register":
      return register(request);
    case "stats":
      return stats();
    case "stop":
      stopping = true;
      await Promise.all(providers.map((p) => p.stop()));
      for (const c of connections) c.close();
      setImmediate(() => process.exit(0));
      return undefined;
  }
});
