// The native batching core measured, side by side in one run per model (issue 17, item 6):
// 1. engines: node-llama-cpp direct, the LlamaEngine, the native core (NativeEngine) and llama.cpp's
//    own llama-batched-bench (the limit), batch by batch; then a new row joining three decoding rows
//    (its TTFT, and how long the running rows stalled).
// 2. stack: the whole Darkbloom network (coordinator + daemon on its default engine) against
//    llama-server on the same file, at 1, 2, 4 and 8 concurrent streamed requests.
// llama-server and llama-batched-bench are built by the benchmark from the llama.cpp source that
// node-llama-cpp ships (tests/bench/native/llama-cpp-tools.ts).
// Usage: npm run bench:native -- [--models tiny,qwen3-0.6b] [--threads auto|N] [--batches 1,2,4]
//          [--levels 1,2,4,8] [--prompt-tokens 256] [--gen-tokens 64] [--rounds 3] [--joins 3]
//          [--parts engines,stack] [--summary median|best] [--cache-dir DIR] [--json]
import { spawnSync } from "node:child_process";
import { link, mkdir, mkdtemp, rm } from "node:fs/promises";
import { cpus } from "node:os";
import { join, resolve } from "node:path";
import { startLocalNetwork } from "@darkbloom/local-network";
import {
  bench,
  chooseThreads,
  detectTopology,
  LlamaEngine,
  type ModelFile,
  type ModelShapeName,
  modelPath,
  NativeEngine,
} from "@darkbloom/provider";
import { benchModel } from "../bench-model.js";
import { type BenchCli, benchCli, shapeFlags, shapeOptions, shapesFlag, summaryFlag } from "../cli.js";
import { measureCpuPressure } from "../load/pressure.js";
import {
  type BatchedBenchRow,
  buildLlamaCppTools,
  type LlamaCppTools,
  runBatchedBench,
  startLlamaServer,
} from "./llama-cpp-tools.js";
import {
  BATCHED_BENCH,
  batchedBenchResult,
  checksOf,
  DIRECT,
  FULL_STACK,
  formatJoins,
  type JoinResult,
  LLAMA_ENGINE,
  LLAMA_SERVER,
  type ModelRun,
  NATIVE,
} from "./report.js";

const USAGE =
  "usage: npm run bench:native -- [--models tiny,qwen3-0.6b] [--threads auto|N] [--batches 1,2,4] " +
  "[--levels 1,2,4,8] [--prompt-tokens N] [--gen-tokens N] [--rounds N] [--joins N] " +
  "[--parts engines,stack] [--summary median|best] [--cache-dir DIR] [--json]";

const SHAPE = { batches: [1, 2, 4], promptTokens: 256, genTokens: 64, rounds: 3 };
const cli: BenchCli = benchCli("native-bench", USAGE, {
  ...shapeOptions(SHAPE),
  models: { type: "string", default: "tiny,qwen3-0.6b" },
  threads: { type: "string", default: "auto" },
  levels: { type: "string", default: "1,2,4,8" },
  joins: { type: "string", default: "3" },
  parts: { type: "string", default: "engines,stack" },
  summary: { type: "string", default: "median" },
});
const { values, progress } = cli;
const shapes = shapesFlag(cli, values.models);
const parts = new Set(String(values.parts).split(","));
for (const part of parts)
  if (part !== "engines" && part !== "stack") cli.usage(`--parts: unknown part ${part}`);
const summary = summaryFlag(cli, values.summary);
const { batches, promptTokens, genTokens, rounds } = shapeFlags(cli, SHAPE);
if (!batches.includes(1)) cli.usage("--batches must include 1 (the per-token overhead)");
const { fixedThreads, levels, joins } = cli.flags(() => ({
  fixedThreads:
    values.threads === "auto" ? undefined : bench.integerFlag("--threads", values.threads, 2, 1, 256),
  levels: bench.batchesFlag("--levels", values.levels, [1, 2, 4, 8]),
  joins: bench.integerFlag("--joins", values.joins, 3, 0, 100),
}));

// The addon and llama.cpp's clone (npm run build:native), then llama.cpp's two programs.
progress("npm run build:native");
if (spawnSync(process.execPath, ["native/scripts/build.mjs"], { stdio: ["ignore", 2, 2] }).status !== 0) {
  progress("the native build failed");
  process.exit(1);
}
const tools: LlamaCppTools = buildLlamaCppTools(progress);
const cacheDir = resolve(String(values["cache-dir"]));
const contextSize = bench.benchContextSize(promptTokens, genTokens);
/** A joining row needs three running rows; the engines hold at least four. */
const JOIN_RUNNING = 3;

/** Engine options shared by both engines: the rows and row size of the widest measurement. */
function engineOptions(threads: number) {
  return {
    maxBatch: Math.max(...batches, JOIN_RUNNING + 1),
    maxContext: contextSize,
    threads,
    idleTimeoutMinutes: 0,
    gpu: false as const,
    onLog: (level: string, message: string) => {
      if (level === "error" || level === "warn") progress(`engine: ${message}`);
    },
  };
}

/** Attempts at a join before giving up (each one with new prompts). */
const JOIN_ATTEMPTS = 12;
let nextJoinPrompt = 2_000_000;

/**
 * One join on `target`, its running rows long enough to outlast the newcomer's wait: from `tokens`,
 * doubled while they end at their length (up to what a row's context holds), and other prompts when
 * one ends at an end-of-generation token. Returns the length that worked.
 */
async function joinOnce(
  target: bench.BenchTarget,
  prompts: bench.PromptSet,
  tokens: number,
): Promise<{ join: bench.JoinMeasurement; tokens: number }> {
  const limit = contextSize - promptTokens - 16;
  let length = Math.min(tokens, limit);
  for (let attempt = 1; ; attempt++) {
    const index = nextJoinPrompt;
    nextJoinPrompt += JOIN_RUNNING + 1;
    try {
      const join = await bench.measureJoin(target, {
        running: Array.from({ length: JOIN_RUNNING }, (_, i) => prompts.get(index + i).text),
        joining: prompts.get(index + JOIN_RUNNING).text,
        runningTokens: length,
      });
      return { join, tokens: length };
    } catch (error) {
      if (!(error instanceof bench.JoinTooShortError) || attempt >= JOIN_ATTEMPTS) throw error;
      if (error.atLength) {
        if (length >= limit) throw error;
        length = Math.min(length * 2, limit);
      }
      progress(`${error.message}; again with ${length}-token rows`);
    }
  }
}

async function measureEngines(
  model: ModelFile,
  threads: number,
  direct: bench.DirectTarget,
  prompts: bench.PromptSet,
): Promise<Pick<ModelRun, "engines" | "joins">> {
  const llamaEngine = new LlamaEngine(engineOptions(threads));
  const nativeEngine = new NativeEngine(engineOptions(threads));
  try {
    await llamaEngine.load(model);
    await nativeEngine.load(model);
    // The native engine's rows decode their full length, as llama-batched-bench's do: a row ending
    // early (tiny's random weights sample an end of generation within 64 tokens in about one round
    // in ten) shortens the window "all rows busy" measures to a few steps, and the rate over it says
    // little. The ban is a logit bias of a handful of tokens. node-llama-cpp refuses to bias
    // end-of-generation tokens, so the direct target's and the llama engine's rows may still end
    // early: the table's notes count them.
    const full = { logitBias: direct.endOfGeneration.map((t) => [t, Number.NEGATIVE_INFINITY] as const) };
    const targets = [
      direct,
      bench.engineTarget(llamaEngine, model.id, LLAMA_ENGINE),
      bench.engineTarget(nativeEngine, model.id, NATIVE, full),
    ];
    // The limit's rounds alternate with the engines': a few seconds apart, both see the same
    // machine (on a shared VM a neighbour's load comes and goes over seconds, which moved the ratio
    // of tiny's short rounds by 10% when the limit ran after all of them).
    const runs: BatchedBenchRow[][] = [];
    const engines = await bench.runBenchmark(targets, {
      promptTokens,
      genTokens,
      batches,
      rounds,
      prompts,
      onProgress: progress,
      afterRound: async (round) => {
        progress(`round ${round + 1}/${rounds}: ${BATCHED_BENCH}`);
        runs.push(
          await runBatchedBench(tools, {
            model: model.path,
            threads,
            promptTokens,
            genTokens,
            batches,
            contextPerRow: contextSize,
          }),
        );
      },
    });
    engines.push(batchedBenchResult(runs));

    const joinResults: JoinResult[] = [];
    for (const target of targets) {
      let runningTokens = genTokens;
      const measured: bench.JoinMeasurement[] = [];
      for (let i = 0; i < joins; i++) {
        progress(`join ${i + 1}/${joins}: ${target.name}`);
        const once = await joinOnce(target, prompts, runningTokens);
        runningTokens = once.tokens;
        measured.push(once.join);
      }
      if (measured.length > 0)
        joinResults.push({ target: target.name, median: bench.medianJoin(measured), rounds: measured });
    }
    return { engines, joins: joinResults };
  } finally {
    await nativeEngine.close();
    await llamaEngine.close();
  }
}

async function measureStack(
  model: ModelFile,
  shape: ModelShapeName,
  threads: number,
  prompts: bench.PromptSet,
) {
  const widest = Math.max(...levels);
  const server = await startLlamaServer(tools, {
    model: model.path,
    threads,
    slots: widest,
    contextPerSlot: contextSize,
  });
  // Stopped whatever fails after it: a spawned server would outlive this process.
  try {
    const dataDir = await mkdtemp(join(resolve(".darkbloom"), "bench-network-"));
    const providerModels = join(dataDir, "providers", "0", "models");
    await mkdir(providerModels, { recursive: true });
    await link(model.path, modelPath(providerModels, shape));
    // The daemon inherits these: as many rows as llama-server has slots, of the same size.
    process.env.DARKBLOOM_MAX_CONTEXT = String(contextSize);
    process.env.DARKBLOOM_MAX_BATCH = String(widest);
    const network = await startLocalNetwork({ port: 0, dataDir, providers: 1, model: shape, log: progress });
    const stack = bench.httpTarget({
      baseUrl: network.baseUrl,
      apiKey: network.apiKey,
      model: shape,
      maxSockets: widest,
    });
    const peer = bench.httpTarget({
      baseUrl: server.baseUrl,
      apiKey: "none",
      model: shape,
      maxSockets: widest,
      name: LLAMA_SERVER,
    });
    try {
      return await bench.runBenchmark([peer, stack], {
        promptTokens,
        genTokens,
        batches: levels,
        rounds,
        prompts,
        onProgress: progress,
      });
    } finally {
      await stack.close();
      await peer.close();
      await network.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  } finally {
    await server.stop();
  }
}

const runsOut: ModelRun[] = [];
const pressure = measureCpuPressure();
const started = performance.now();
const topology = await detectTopology();
for (const shape of shapes) {
  const model = await benchModel(cacheDir, shape, progress);
  // The daemon's own rule unless --threads says: the full stack's daemon always follows it.
  const auto = chooseThreads({ modelBytes: model.sizeBytes, topology }).threads;
  const threads = fixedThreads ?? auto;
  if (parts.has("stack") && threads !== auto)
    progress(`note: the full stack's daemon runs on ${auto} threads, the others on ${threads}`);
  const direct = await bench.openDirectTarget(model.path, {
    threads,
    contextSize,
    name: DIRECT,
    onLog: (l) => progress(`llama.cpp: ${l}`),
  });
  const prompts = new bench.PromptSet(direct.tokenizer, promptTokens);
  try {
    const run: ModelRun = {
      shape,
      sizeBytes: model.sizeBytes,
      threads,
      contextSize,
      engines: [],
      joins: [],
      stack: [],
    };
    if (parts.has("engines")) Object.assign(run, await measureEngines(model, threads, direct, prompts));
    if (parts.has("stack")) run.stack = await measureStack(model, shape, threads, prompts);
    runsOut.push(run);
  } finally {
    await direct.close();
  }
}
const cpuPressure = pressure();
const measuredSeconds = Math.round((performance.now() - started) / 1000);
const machine = `${cpus().length} x ${cpus()[0]?.model ?? "CPU"}, Node ${process.version}`;

if (values.json) {
  const checks = runsOut.map((run) => ({
    shape: run.shape,
    median: checksOf(run, "median"),
    best: checksOf(run, "best"),
  }));
  process.stdout.write(
    `${JSON.stringify({ machine, llamaCpp: tools.commit, promptTokens, genTokens, rounds, runs: runsOut, checks, measuredSeconds, cpuPressure }, null, 2)}\n`,
  );
} else {
  const other: bench.RoundSummary = summary === "median" ? "best" : "median";
  for (const run of runsOut) {
    process.stdout.write(
      `\n## ${run.shape} (synthesized Q8_0, ${(run.sizeBytes / 2 ** 20).toFixed(0)} MiB), ${run.threads} thread${run.threads === 1 ? "" : "s"}, ` +
        `CPU, ${machine}, llama.cpp ${tools.commit}\n${promptTokens}-token prompts, ${genTokens} greedy tokens per row, ` +
        `${contextSize} tokens per row, ${summary} of ${rounds} round${rounds === 1 ? "" : "s"}\n\n`,
    );
    if (run.engines.length > 0) {
      process.stdout.write(
        bench.formatComparison(
          run.engines,
          [
            [NATIVE, BATCHED_BENCH],
            [NATIVE, LLAMA_ENGINE],
            [NATIVE, DIRECT],
          ],
          summary,
          bench.WALL_METRICS,
        ),
      );
      process.stdout.write(`\n${bench.formatWorkload(run.engines, genTokens)}`);
      process.stdout.write(
        `\nA row joining ${JOIN_RUNNING} decoding rows (median of ${joins}):\n${formatJoins(run.joins)}`,
      );
    }
    if (run.stack.length > 0) {
      process.stdout.write(`\nConcurrent streamed requests (batch = requests in flight together):\n`);
      process.stdout.write(
        bench.formatComparison(run.stack, [[FULL_STACK, LLAMA_SERVER]], summary, bench.WALL_METRICS),
      );
      process.stdout.write(`\n${bench.formatWorkload(run.stack, genTokens)}`);
    }
    process.stdout.write("\n");
    const alt = checksOf(run, other);
    for (const [i, c] of checksOf(run, summary).entries()) {
      const a = alt[i];
      process.stdout.write(
        `${c.pass ? "PASS" : "FAIL"}  ${c.name}: ${c.detail}` +
          (a ? ` (${other} of rounds: ${a.pass ? "PASS" : "FAIL"}, ${a.detail})` : "") +
          "\n",
      );
    }
  }
  process.stdout.write(
    `\nMeasuring took ${measuredSeconds} s` +
      (cpuPressure === undefined
        ? ".\n"
        : `; some task waited for a CPU ${(cpuPressure * 100).toFixed(1)}% of that time.\n`),
  );
  process.stdout.write(`\n${bench.METRIC_NOTES}${bench.WALL_METRIC_NOTE}`);
}
