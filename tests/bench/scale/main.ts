// Scale drills: many simulated providers on one coordinator, and many simultaneous consumer streams.
// Usage: npm run bench:scale -- [--providers 10000] [--streams 1000] [--json]
//   [--heartbeat-ms 5000] [--steady-periods 3] [--requests 200] [--providers-per-swarm 5000]
//   [--streams-per-connection 500] [--tokens 20] [--token-interval-ms 50] [--billing]
// --providers 0 or --streams 0 skips that drill. Exit 1 when a drill fails a check, 64 on bad flags.
// BENCH_CPU_PROFILE=dir writes V8 CPU profiles of the coordinator processes there.
import { cpus, totalmem } from "node:os";
import { parseArgs } from "node:util";
import { startTestPostgres } from "@darkbloom/coordinator/testing";
import { PROVIDER_DRILL_DEFAULTS, type ProviderDrillResult, runProviderDrill } from "./provider-drill.js";
import { renderProviderDrill, renderStreamDrill } from "./report.js";
import { runStreamDrill, type StreamDrillResult, streamDrillDefaults } from "./stream-drill.js";

const USAGE =
  "usage: bench:scale -- [--providers N] [--streams N] [--json] [--heartbeat-ms MS] [--steady-periods N]\n" +
  "  [--requests N] [--providers-per-swarm N] [--streams-per-connection N] [--tokens N]\n" +
  "  [--token-interval-ms MS] [--billing]\n";

function usage(message: string): never {
  process.stderr.write(`bench:scale: ${message}\n${USAGE}`);
  process.exit(64);
}

let values: Record<string, string | boolean | undefined>;
try {
  values = parseArgs({
    strict: true,
    allowPositionals: false,
    options: {
      providers: { type: "string", default: "10000" },
      streams: { type: "string", default: "1000" },
      json: { type: "boolean", default: false },
      "heartbeat-ms": { type: "string", default: String(PROVIDER_DRILL_DEFAULTS.heartbeatIntervalMs) },
      "steady-periods": { type: "string", default: String(PROVIDER_DRILL_DEFAULTS.steadyPeriods) },
      requests: { type: "string", default: String(PROVIDER_DRILL_DEFAULTS.requests) },
      "providers-per-swarm": { type: "string", default: String(PROVIDER_DRILL_DEFAULTS.providersPerSwarm) },
      "streams-per-connection": {
        type: "string",
        default: String(PROVIDER_DRILL_DEFAULTS.streamsPerConnection),
      },
      tokens: { type: "string", default: "20" },
      "token-interval-ms": { type: "string", default: "50" },
      billing: { type: "boolean", default: false },
    },
  }).values;
} catch (e) {
  usage(e instanceof Error ? e.message : String(e));
}

function int(name: string, min: number): number {
  const raw = String(values[name]);
  const v = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(v) || v < min)
    usage(`--${name} must be an integer ≥ ${min}`);
  return v;
}

const providers = int("providers", 0);
const streams = int("streams", 0);
const heartbeatIntervalMs = int("heartbeat-ms", 100);
const steadyPeriods = int("steady-periods", 3);
const requests = int("requests", 1);
const providersPerSwarm = int("providers-per-swarm", 1);
const streamsPerConnection = int("streams-per-connection", 1);
const tokens = int("tokens", 1);
const tokenIntervalMs = int("token-interval-ms", 0);
if (providers === 0 && streams === 0) usage("--providers and --streams are both 0: nothing to run");
const json = values.json === true;
const billing = values.billing === true;
const cpuProfileDir = process.env.BENCH_CPU_PROFILE || undefined;
const log = (line: string) => process.stderr.write(`bench:scale: ${line}\n`);

const machine = `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
const pg = await startTestPostgres();
let providerResult: ProviderDrillResult | undefined;
let streamResult: StreamDrillResult | undefined;
try {
  if (providers > 0) {
    log(`provider drill: ${providers} providers, heartbeat ${heartbeatIntervalMs} ms`);
    providerResult = await runProviderDrill({
      ...PROVIDER_DRILL_DEFAULTS,
      databaseUrl: pg.url,
      providers,
      heartbeatIntervalMs,
      steadyPeriods,
      idleWindowMs: heartbeatIntervalMs,
      requests,
      providersPerSwarm,
      streamsPerConnection,
      billing,
      cpuProfileDir,
      log,
    });
    if (!json) process.stdout.write(renderProviderDrill(providerResult));
  }
  if (streams > 0) {
    log(`stream drill: ${streams} streams × ${tokens} tokens, ${tokenIntervalMs} ms apart`);
    streamResult = await runStreamDrill({
      ...streamDrillDefaults(streams),
      databaseUrl: pg.url,
      tokens,
      interTokenDelayMs: tokenIntervalMs,
      billing,
      cpuProfileDir,
      log,
    });
    if (!json) process.stdout.write(renderStreamDrill(streamResult));
  }
} finally {
  await pg.stop();
}

const passed = (providerResult?.passed ?? true) && (streamResult?.passed ?? true);
if (json) {
  process.stdout.write(
    `${JSON.stringify({ machine, passed, providerDrill: providerResult, streamDrill: streamResult }, null, 2)}\n`,
  );
} else {
  process.stdout.write(`\n${machine}: ${passed ? "all checks passed" : "CHECKS FAILED"}\n`);
}
process.exit(passed ? 0 : 1);
