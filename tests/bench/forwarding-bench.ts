// Coordinator replicas on one PostgreSQL: what forwarding adds, and what more replicas give.
// Usage: npm run bench:forwarding -- [--levels 1,100] [--requests N] [--providers N] [--rounds N]
//   [--replicas 3] [--json]
//
// 1. Forwarded vs local: instant providers connected to replica B; the same load sent to B (served
//    by its own providers) and to replica A (forwarded to B over PeerService.Forward), alternating,
//    each --rounds times. "added" is the consumer's first body byte minus the provider's first
//    token (one clock, one machine): what the coordinator (and, forwarded, the hop) adds.
// 2. One replica vs --replicas: the providers spread over the replicas and the load spread over
//    them (each replica forwarding where its own providers are busy), against one replica holding
//    every provider and taking all the load.

import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { startTestPostgres } from "@darkbloom/coordinator/testing";
import { ScriptedProvider } from "@darkbloom/testing";
import { median, nowMs, percentile, runLoad } from "../support/load-client.js";
import { printTable } from "../support/table.js";
import { type Server, serverCpu, spawnServer, stopServer } from "./servers.js";

const { values } = parseArgs({
  options: {
    levels: { type: "string", default: "1,100" },
    requests: { type: "string", default: "5000" },
    providers: { type: "string", default: "4" },
    rounds: { type: "string", default: "3" },
    replicas: { type: "string", default: "3" },
    json: { type: "boolean", default: false },
  },
});
const levels = (values.levels ?? "").split(",").map(Number);
const total = Number(values.requests);
const providerCount = Number(values.providers);
const rounds = Number(values.rounds);
const replicaCount = Number(values.replicas);
if (
  levels.some((l) => !Number.isInteger(l) || l < 1) ||
  ![total, providerCount, rounds, replicaCount].every((n) => Number.isInteger(n) && n >= 1)
) {
  process.stderr.write(
    "forwarding-bench: --levels must be positive integers; --requests, --providers, --rounds and --replicas positive integers\n",
  );
  process.exit(64);
}

const PEER_TOKEN = "forwarding-bench-peer-token-0123456789";
const TOKENS = Array.from({ length: 16 }, (_, i) => `tok${i} `);
const body = JSON.stringify({
  model: "bench",
  messages: [{ role: "user", content: "Count to sixteen." }],
  stream: true,
  max_tokens: 16,
});

interface Row {
  target: string;
  concurrency: number;
  round: number;
  requests: number;
  errors: number;
  requestsPerSecond: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  addedP50Ms: number;
  addedP99Ms: number;
  /** CPU of every coordinator process per request, µs. */
  coordinatorCpuUsPerRequest: number;
}

const pg = await startTestPostgres();
const firstToken = new Map<string, number>();
const providers: ScriptedProvider[] = [];

async function replica(): Promise<Server> {
  return spawnServer(["coordinator", pg.url, "billing", "sealed", `peer=${PEER_TOKEN}`]);
}

async function connectProviders(to: Server, count: number, prefix: string): Promise<void> {
  for (let i = 0; i < count; i++) {
    const p = new ScriptedProvider({
      baseUrl: to.url,
      models: [{ id: "bench", contextLength: 8192 }],
      maxBatch: 1024,
      machineId: `${prefix}-${i}`,
      recordRequests: false,
      script: () => ({ tokens: TOKENS }),
    });
    p.on("request", (r) => firstToken.set(r.requestId, nowMs()));
    await p.start();
    providers.push(p);
  }
}

/** Waits until `s` serves the model (through the directory, for a replica without providers). */
async function serving(s: Server): Promise<void> {
  const until = Date.now() + 30_000;
  for (;;) {
    const r = await runLoad({
      url: s.url,
      path: "/v1/chat/completions",
      apiKey: s.apiKey,
      body,
      concurrency: 1,
      total: 1,
    });
    if (r.ok === 1) return;
    if (Date.now() > until)
      throw new Error(`${s.url} does not serve the model: ${JSON.stringify(r.statusCounts)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Runs `concurrency` clients spread over `targets` (round robin), `total` requests in all. */
async function measure(
  target: string,
  targets: Server[],
  all: Server[],
  concurrency: number,
  roundIndex: number,
): Promise<Row> {
  const requests = concurrency === 1 ? Math.min(total, 2000) : total;
  const share = (n: number, i: number) => Math.floor(n / targets.length) + (i < n % targets.length ? 1 : 0);
  const run = (n: number, c: number) =>
    Promise.all(
      targets.map((s, i) =>
        share(c, i) === 0
          ? undefined
          : runLoad({
              url: s.url,
              path: "/v1/chat/completions",
              apiKey: s.apiKey,
              body,
              concurrency: share(c, i),
              total: share(n, i),
              onFirstByte: (id, at) => {
                const sent = firstToken.get(id);
                if (sent !== undefined) added.push(at - sent);
                firstToken.delete(id);
              },
            }),
      ),
    );
  let added: number[] = [];
  await run(Math.min(requests, concurrency * 4), concurrency); // warm-up
  added = [];
  firstToken.clear();
  const cpuBefore = await Promise.all(all.map(serverCpu));
  const t0 = performance.now();
  const results = (await run(requests, concurrency)).filter((r) => r !== undefined);
  const seconds = (performance.now() - t0) / 1000;
  const cpuAfter = await Promise.all(all.map(serverCpu));
  const cpu = cpuAfter.reduce((sum, c, i) => sum + c.cpuUs - (cpuBefore[i]?.cpuUs ?? 0), 0);
  const latencies = results.flatMap((r) => r.latenciesMs);
  const ok = results.reduce((n, r) => n + r.ok, 0);
  return {
    target,
    concurrency,
    round: roundIndex,
    requests,
    errors: results.reduce((n, r) => n + r.errors, 0),
    requestsPerSecond: Math.round(ok / seconds),
    latencyP50Ms: round(percentile(latencies, 50)),
    latencyP99Ms: round(percentile(latencies, 99)),
    addedP50Ms: round(percentile(added, 50), 3),
    addedP99Ms: round(percentile(added, 99), 3),
    coordinatorCpuUsPerRequest: Math.round(cpu / requests),
  };
}

function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

const rows: Row[] = [];

// 1. Forwarded vs local: providers on B only; A forwards.
{
  const b = await replica();
  const a = await replica();
  await connectProviders(b, providerCount, "fwd-b");
  await serving(b);
  await serving(a);
  for (let r = 0; r < rounds; r++) {
    for (const c of levels) {
      const order: Array<[string, Server]> = [
        ["local: consumer and providers on one replica", b],
        ["forwarded: consumer on A, providers on B", a],
      ];
      if (r % 2 === 1) order.reverse();
      for (const [name, s] of order) rows.push(await measure(name, [s], [a, b], c, r));
    }
  }
  await Promise.all(providers.splice(0).map((p) => p.stop()));
  await Promise.all([stopServer(a), stopServer(b)]);
}

// 2. One replica vs several: the same providers and load, on one or spread over all.
{
  const one = await replica();
  await connectProviders(one, providerCount, "one");
  await serving(one);
  for (let r = 0; r < rounds; r++) {
    for (const c of levels.filter((l) => l > 1)) rows.push(await measure("1 replica", [one], [one], c, r));
  }
  await Promise.all(providers.splice(0).map((p) => p.stop()));
  await stopServer(one);
  const many = await Promise.all(Array.from({ length: replicaCount }, () => replica()));
  for (let i = 0; i < providerCount; i++)
    await connectProviders(many[i % replicaCount] as Server, 1, `many-${i}`);
  for (const s of many) await serving(s);
  for (let r = 0; r < rounds; r++) {
    for (const c of levels.filter((l) => l > 1)) {
      rows.push(await measure(`${replicaCount} replicas, load and providers spread`, many, many, c, r));
    }
  }
  await Promise.all(providers.splice(0).map((p) => p.stop()));
  await Promise.all(many.map(stopServer));
}
await pg.stop();

// Medians over the rounds, per target and level.
const summary = [...new Set(rows.map((r) => `${r.target}\u0000${r.concurrency}`))].map((key) => {
  const same = rows.filter((r) => `${r.target}\u0000${r.concurrency}` === key);
  const med = (f: (r: Row) => number) => median(same.map(f));
  return {
    target: same[0]?.target ?? "",
    concurrency: same[0]?.concurrency ?? 0,
    rounds: same.length,
    errors: same.reduce((n, r) => n + r.errors, 0),
    requestsPerSecond: Math.round(med((r) => r.requestsPerSecond)),
    latencyP50Ms: round(med((r) => r.latencyP50Ms)),
    latencyP99Ms: round(med((r) => r.latencyP99Ms)),
    addedP50Ms: round(
      med((r) => r.addedP50Ms),
      3,
    ),
    addedP99Ms: round(
      med((r) => r.addedP99Ms),
      3,
    ),
    coordinatorCpuUsPerRequest: Math.round(med((r) => r.coordinatorCpuUsPerRequest)),
  };
});
const machine = `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, Node ${process.version}`;
if (values.json) {
  process.stdout.write(`${JSON.stringify({ machine, rows, medians: summary }, null, 2)}\n`);
} else {
  process.stdout.write(
    `\nForwarding benchmark: 16-token streamed chat completions, ${providerCount} instant providers, medians of ${rounds} rounds (${machine})\n\n`,
  );
  const header = [
    "target",
    "conc",
    "err",
    "req/s",
    "p50 ms",
    "p99 ms",
    "added p50 ms",
    "added p99 ms",
    "coordinators' cpu µs/req",
  ];
  const lines = summary.map((m) =>
    [
      m.target,
      m.concurrency,
      m.errors,
      m.requestsPerSecond,
      m.latencyP50Ms,
      m.latencyP99Ms,
      m.addedP50Ms,
      m.addedP99Ms,
      m.coordinatorCpuUsPerRequest,
    ].map(String),
  );
  printTable(header, lines);
  process.stdout.write(
    "\nadded = consumer's first body byte minus the provider's first token (same clock, one machine).\n" +
      "coordinators' cpu = every coordinator process of the row (all threads), per request.\n",
  );
}
