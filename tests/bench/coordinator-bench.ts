// Coordinator throughput and added latency with protocol-speaking instant providers.
// Usage: npm run bench:coordinator -- [--levels 1,100,1000] [--requests N] [--providers N]
//   [--tokens-per-chunk N] [--billing on|off|both] [--encryption on|off|both]
//   [--vocabulary on|off|both] [--rounds N] [--json]
//   --vocabulary on gives the model a Qwen3-sized vocabulary (151,936 tokens): the coordinator counts
//   every prompt and completion itself; off leaves usage bounded from the text
//   [--compare-with CHECKOUT]   also measure another checkout's coordinator (built: npm install &&
//                               npm run build there), alternating with this one, in the same run
//   --rounds N measures every configuration N times, alternating the order between rounds, and
//   prints the medians and each one's difference from the first configuration at its level

import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { startTestPostgres } from "@darkbloom/coordinator/testing";
import { ModelTokenizer, planModel, writeGgufFile } from "@darkbloom/models";
import { ScriptedProvider } from "@darkbloom/testing";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { median, nowMs, percentile, runLoad } from "../support/load-client.js";
import { printTable } from "../support/table.js";
import { OWN_PROCESS, type Server, serverCpu, spawnServer, stopServer } from "./servers.js";

const { values } = parseArgs({
  options: {
    levels: { type: "string", default: "1,100,1000" },
    requests: { type: "string", default: "20000" },
    providers: { type: "string", default: "4" },
    "tokens-per-chunk": { type: "string", default: "1" },
    billing: { type: "string", default: "both" },
    encryption: { type: "string", default: "on" },
    vocabulary: { type: "string", default: "on" },
    "compare-with": { type: "string" },
    rounds: { type: "string", default: "1" },
    json: { type: "boolean", default: false },
  },
});
const levels = (values.levels ?? "").split(",").map(Number);
const total = Number(values.requests);
const providerCount = Number(values.providers);
const rounds = Number(values.rounds);
const tokensPerChunk = Number(values["tokens-per-chunk"]);
const billingModes = values.billing === "both" ? [false, true] : [values.billing === "on"];
if (!["both", "on", "off"].includes(values.billing ?? "")) {
  process.stderr.write("coordinator-bench: --billing must be on, off or both\n");
  process.exit(64);
}
if (!["both", "on", "off"].includes(values.encryption ?? "")) {
  process.stderr.write("coordinator-bench: --encryption must be on, off or both\n");
  process.exit(64);
}
if (!["both", "on", "off"].includes(values.vocabulary ?? "")) {
  process.stderr.write("coordinator-bench: --vocabulary must be on, off or both\n");
  process.exit(64);
}
// Off first, so that "both" compares like with like in one run.
const encryptionModes = values.encryption === "both" ? [false, true] : [values.encryption === "on"];
const vocabularyModes = values.vocabulary === "both" ? [false, true] : [values.vocabulary === "on"];
if (
  levels.some((l) => !Number.isInteger(l) || l < 1) ||
  !Number.isInteger(total) ||
  total < 1 ||
  !(providerCount >= 1) ||
  !Number.isInteger(rounds) ||
  rounds < 1
) {
  process.stderr.write(
    "coordinator-bench: --levels must be positive integers, --requests, --providers and --rounds positive\n",
  );
  process.exit(64);
}

/** The other checkout's coordinator process script (its own build of the coordinator), if any. */
const compareWith = values["compare-with"];
const otherProcess = compareWith
  ? resolve(compareWith, "tests/dist/bench/coordinator-process.js")
  : undefined;
if (otherProcess && !existsSync(otherProcess)) {
  process.stderr.write(
    `coordinator-bench: ${otherProcess} does not exist: run npm install && npm run build in ${compareWith}\n`,
  );
  process.exit(64);
}

function ownCpu(): number {
  const cpu = process.cpuUsage();
  return cpu.user + cpu.system;
}

const TOKENS = Array.from({ length: 16 }, (_, i) => `tok${i} `);
const PROMPT = "Count to sixteen.";
const body = JSON.stringify({
  model: "bench",
  messages: [{ role: "user", content: PROMPT }],
  stream: true,
  max_tokens: 16,
});

interface Row {
  target: string;
  concurrency: number;
  requests: number;
  ok: number;
  errors: number;
  requestsPerSecond: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  addedP50Ms?: number;
  addedP99Ms?: number;
  /** CPU time of the measured server process per request, µs (every thread). */
  serverCpuUsPerRequest: number;
  /** CPU time of its main thread per request, µs (absent for a server that does not report it). */
  mainThreadCpuUsPerRequest?: number;
  /** CPU time of this process (load clients and providers) per request, µs. */
  benchCpuUsPerRequest: number;
}

async function measure(
  target: string,
  s: Server,
  concurrency: number,
  providerFirstToken?: Map<string, number>,
): Promise<Row> {
  const requests = concurrency === 1 ? Math.min(total, 2000) : total;
  // Warm up connections and JIT before measuring.
  await runLoad({
    url: s.url,
    path: "/v1/chat/completions",
    apiKey: s.apiKey,
    body,
    concurrency,
    total: Math.min(requests, concurrency * 4),
  });
  providerFirstToken?.clear();
  const added: number[] = [];
  const serverCpuBefore = await serverCpu(s);
  const ownCpuBefore = ownCpu();
  const r = await runLoad({
    url: s.url,
    path: "/v1/chat/completions",
    apiKey: s.apiKey,
    body,
    concurrency,
    total: requests,
    onFirstByte: providerFirstToken
      ? (id, at) => {
          const sent = providerFirstToken.get(id);
          if (sent !== undefined) added.push(at - sent);
          providerFirstToken.delete(id);
        }
      : undefined,
  });
  const ownCpuUsed = ownCpu() - ownCpuBefore;
  const serverCpuAfter = await serverCpu(s);
  const serverCpuUsed = serverCpuAfter.cpuUs - serverCpuBefore.cpuUs;
  const mainThreadUs =
    serverCpuAfter.mainThreadUs !== undefined && serverCpuBefore.mainThreadUs !== undefined
      ? serverCpuAfter.mainThreadUs - serverCpuBefore.mainThreadUs
      : undefined;
  return {
    target,
    concurrency,
    requests,
    ok: r.ok,
    errors: r.errors,
    requestsPerSecond: Math.round(r.requestsPerSecond),
    latencyP50Ms: round(percentile(r.latenciesMs, 50)),
    latencyP99Ms: round(percentile(r.latenciesMs, 99)),
    ...(providerFirstToken
      ? { addedP50Ms: round(percentile(added, 50), 3), addedP99Ms: round(percentile(added, 99), 3) }
      : {}),
    serverCpuUsPerRequest: round(serverCpuUsed / requests, 1),
    ...(mainThreadUs !== undefined ? { mainThreadCpuUsPerRequest: round(mainThreadUs / requests, 1) } : {}),
    benchCpuUsPerRequest: round(ownCpuUsed / requests, 1),
  };
}

function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

// A vocabulary of Qwen3's size (the synthesizer's qwen3-0.6b tokenizer, no weights), and what the
// providers report: the count of their text, as an honest engine does.
const vocabularyDir = await mkdtemp(join(tmpdir(), "darkbloom-bench-vocabulary-"));
const vocabularyPath = join(vocabularyDir, "qwen3-0.6b.vocab.gguf");
await writeGgufFile(vocabularyPath, { kv: planModel("qwen3-0.6b").kv, tensors: [] });
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
const counter = await ModelTokenizer.open(llama, vocabularyPath);
const COMPLETION_TOKENS = counter.countText(TOKENS.join(""));
const PROMPT_TOKENS = counter.countPrompt({ kind: "chat", messages: [{ role: "user", content: PROMPT }] });
await counter.dispose();
await llama.dispose();

const pg = await startTestPostgres();
const rows: Row[] = [];
const baseline = await spawnServer(["baseline"]);
for (const c of levels) rows.push(await measure("bare Node SSE server (baseline)", baseline, c));
await stopServer(baseline);

/** The coordinators to measure: this checkout's, and another's when comparing (measured first). */
const targets: { name: string; script: string; counts: boolean }[] = [
  ...(otherProcess
    ? [
        {
          name: `${compareWith}: `,
          script: otherProcess,
          // A checkout whose benchmark server takes a vocabulary counts usage, as this one does.
          counts: readFileSync(otherProcess, "utf8").includes("vocabulary="),
        },
      ]
    : []),
  { name: otherProcess ? "this checkout: " : "", script: OWN_PROCESS, counts: true },
];

async function measureCoordinator(
  target: { name: string; script: string; counts: boolean },
  billing: boolean,
  encryption: boolean,
  vocabulary: boolean,
  concurrency: number,
): Promise<Row> {
  const coordinator = await spawnServer(
    [
      "coordinator",
      pg.url,
      billing ? "billing" : "no-billing",
      encryption ? "sealed" : "plaintext",
      ...(vocabulary ? [`vocabulary=${vocabularyPath}`] : []),
    ],
    target.script,
  );
  const firstToken = new Map<string, number>();
  const providers = await Promise.all(
    Array.from({ length: providerCount }, async (_, i) => {
      const p = new ScriptedProvider({
        baseUrl: coordinator.url,
        models: [{ id: "bench", contextLength: 8192 }],
        maxBatch: 1024,
        machineId: `bench-${i}`,
        recordRequests: false,
        encryption,
        // An honest provider of each checkout's protocol: one that counts usage gets the count of the
        // text; a coordinator from before counted usage expects the tokens sampled (one a token here).
        script: () => ({
          tokens: TOKENS,
          tokensPerChunk,
          ...(target.counts ? { completionTokens: COMPLETION_TOKENS, promptTokens: PROMPT_TOKENS } : {}),
        }),
      });
      // Instant providers send their first token as soon as the request arrives.
      p.on("request", (r) => firstToken.set(r.requestId, nowMs()));
      await p.start();
      return p;
    }),
  );
  const label =
    `${target.name}coordinator, billing ${billing ? "on" : "off"}, encryption ${encryption ? "on" : "off"}, ` +
    (target.script === OWN_PROCESS ? `usage ${vocabulary ? "counted" : "bounded"}, ` : "") +
    `${providerCount} instant providers` +
    (tokensPerChunk > 1 ? ` (${tokensPerChunk} tokens/chunk)` : "");
  try {
    return await measure(label, coordinator, concurrency, firstToken);
  } finally {
    await Promise.all(providers.map((p) => p.stop()));
    await stopServer(coordinator);
  }
}

// Every configuration at every level, once a round. Within a level the configurations run one after
// the other (a fresh coordinator each) and the order reverses every round, so that a drift of the
// machine's speed during the run touches them alike.
for (let round = 0; round < rounds; round++) {
  for (const billing of billingModes) {
    for (const encryption of encryptionModes) {
      for (const c of levels) {
        const configurations = vocabularyModes.flatMap((vocabulary) =>
          targets.map((target) => ({ target, vocabulary })),
        );
        if (round % 2 === 1) configurations.reverse();
        for (const { target, vocabulary } of configurations) {
          rows.push(await measureCoordinator(target, billing, encryption, vocabulary, c));
        }
      }
    }
  }
}
await pg.stop();
await rm(vocabularyDir, { recursive: true, force: true });

/** One configuration's rounds at one level: medians, and its difference from the level's first. */
interface Median {
  target: string;
  concurrency: number;
  rounds: number;
  requestsPerSecond: number;
  minRequestsPerSecond: number;
  maxRequestsPerSecond: number;
  serverCpuUsPerRequest: number;
  mainThreadCpuUsPerRequest?: number;
  /** Throughput relative to the first configuration measured at this level, in percent. */
  deltaPercent: number;
}

function medians(measured: Row[]): Median[] {
  const out: Median[] = [];
  const coordinators = measured.filter((r) => !r.target.startsWith("bare"));
  for (const target of [...new Set(coordinators.map((r) => r.target))]) {
    for (const concurrency of [...new Set(coordinators.map((r) => r.concurrency))]) {
      const same = coordinators.filter((r) => r.target === target && r.concurrency === concurrency);
      if (same.length === 0) continue;
      const main = same.flatMap((r) =>
        r.mainThreadCpuUsPerRequest === undefined ? [] : [r.mainThreadCpuUsPerRequest],
      );
      const rps = same.map((r) => r.requestsPerSecond);
      out.push({
        target,
        concurrency,
        rounds: same.length,
        requestsPerSecond: Math.round(median(rps)),
        minRequestsPerSecond: Math.min(...rps),
        maxRequestsPerSecond: Math.max(...rps),
        serverCpuUsPerRequest: round(median(same.map((r) => r.serverCpuUsPerRequest)), 1),
        ...(main.length > 0 ? { mainThreadCpuUsPerRequest: round(median(main), 1) } : {}),
        deltaPercent: 0,
      });
    }
  }
  for (const m of out) {
    const first = out.find((o) => o.concurrency === m.concurrency) as Median;
    m.deltaPercent = round((m.requestsPerSecond / first.requestsPerSecond - 1) * 100, 1);
  }
  return out;
}

const summary = rounds > 1 ? medians(rows) : [];
const machine = `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, Node ${process.version}`;
if (values.json) {
  process.stdout.write(
    `${JSON.stringify({ machine, tokensPerRequest: 16, rows, ...(rounds > 1 ? { medians: summary } : {}) }, null, 2)}\n`,
  );
} else {
  process.stdout.write(`\nCoordinator benchmark: 16-token streamed chat completions (${machine})\n\n`);
  const header = [
    "target",
    "conc",
    "reqs",
    "ok",
    "err",
    "req/s",
    "p50 ms",
    "p99 ms",
    "added p50 ms",
    "added p99 ms",
    "server cpu µs/req",
    "main thread µs/req",
  ];
  const lines = rows.map((r) =>
    [
      r.target,
      r.concurrency,
      r.requests,
      r.ok,
      r.errors,
      r.requestsPerSecond,
      r.latencyP50Ms,
      r.latencyP99Ms,
      r.addedP50Ms ?? "-",
      r.addedP99Ms ?? "-",
      r.serverCpuUsPerRequest,
      r.mainThreadCpuUsPerRequest ?? "-",
    ].map(String),
  );
  printTable(header, lines);
  if (summary.length > 0) {
    process.stdout.write(
      `\nMedians of ${rounds} rounds (Δ: throughput against the first row of the level)\n\n`,
    );
    printTable(
      ["target", "conc", "rounds", "req/s", "min–max", "Δ req/s", "server cpu µs/req", "main thread µs/req"],
      summary.map((m) => [
        m.target,
        String(m.concurrency),
        String(m.rounds),
        String(m.requestsPerSecond),
        `${m.minRequestsPerSecond}–${m.maxRequestsPerSecond}`,
        `${m.deltaPercent > 0 ? "+" : ""}${m.deltaPercent}%`,
        String(m.serverCpuUsPerRequest),
        String(m.mainThreadCpuUsPerRequest ?? "-"),
      ]),
    );
  }
  process.stdout.write(
    "\nadded = consumer's first body byte minus the provider's first token (same clock, one machine).\n" +
      "server cpu = every thread of the coordinator process (token counting runs in worker threads);\n" +
      "main thread = the CPU time of its main thread (the event loop), where Linux reports it.\n",
  );
}
