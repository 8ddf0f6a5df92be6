// Provider engine benchmark: node-llama-cpp used directly, the LlamaEngine alone, and the full stack
// (coordinator + provider daemon over HTTP), side by side in one run on one synthesized model.
// Usage: npm run bench:provider -- [--model qwen3-0.6b] [--threads 2] [--batches 1,2,4]
//          [--prompt-tokens 256] [--gen-tokens 64] [--rounds 5] [--summary median|best] [--max-context N] [--json]
import { link, mkdir, mkdtemp, rm } from "node:fs/promises";
import { cpus } from "node:os";
import { join, resolve } from "node:path";
import { startLocalNetwork } from "@darkbloom/local-network";
import {
  bench,
  chooseThreads,
  detectTopology,
  isModelShapeName,
  LlamaEngine,
  MODEL_SHAPES,
  modelPath,
} from "@darkbloom/provider";
import { benchModel } from "./bench-model.js";
import { type BenchCli, benchCli, summaryFlag } from "./cli.js";
import { measureCpuPressure, percentOf } from "./load/pressure.js";

const USAGE =
  "usage: npm run bench:provider -- [--model SHAPE] [--threads N] [--batches 1,2,4] [--prompt-tokens N] " +
  "[--gen-tokens N] [--rounds N] [--summary median|best] [--max-context N] [--cache-dir DIR] [--json]";

const cli: BenchCli = benchCli("provider-bench", USAGE, {
  model: { type: "string", default: "qwen3-0.6b" },
  threads: { type: "string", default: "2" },
  batches: { type: "string", default: "1,2,4" },
  "prompt-tokens": { type: "string", default: "256" },
  "gen-tokens": { type: "string", default: "64" },
  rounds: { type: "string", default: "5" },
  summary: { type: "string", default: "median" },
  "max-context": { type: "string" },
  "cache-dir": { type: "string", default: ".darkbloom/bench-models" },
  json: { type: "boolean", default: false },
});
const { values, progress } = cli;
const shapeName = String(values.model);
if (!isModelShapeName(shapeName) || shapeName.startsWith("tiny")) {
  const known = Object.keys(MODEL_SHAPES).filter((s) => !s.startsWith("tiny"));
  cli.usage(`--model must be one of ${known.join(", ")} (got ${JSON.stringify(shapeName)})`);
}
const { threads, batches, promptTokens, genTokens, rounds, contextSize } = cli.flags(() => {
  const promptTokens = bench.integerFlag("--prompt-tokens", values["prompt-tokens"], 256, 1, 100_000);
  const genTokens = bench.integerFlag("--gen-tokens", values["gen-tokens"], 64, 2, 100_000);
  return {
    threads: bench.integerFlag("--threads", values.threads, 2, 1, 1024),
    batches: bench.batchesFlag("--batches", values.batches, [1, 2, 4]),
    promptTokens,
    genTokens,
    rounds: bench.integerFlag("--rounds", values.rounds, 5, 1, 100),
    contextSize: bench.integerFlag(
      "--max-context",
      values["max-context"],
      bench.benchContextSize(promptTokens, genTokens),
      promptTokens + genTokens,
    ),
  };
});
const summary = summaryFlag(cli, values.summary);
const maxBatch = Math.max(...batches);

// 1. The model, synthesized once into the cache.
const model = await benchModel(resolve(String(values["cache-dir"])), shapeName, progress);

// 2. The three targets: direct, engine alone, full stack. All three stay up for the whole run, so the
// rounds interleave them and a noisy stretch of this shared machine hits all alike.
const direct = await bench.openDirectTarget(model.path, {
  threads,
  contextSize,
  onLog: (line) => progress(`llama.cpp: ${line}`),
});
const engine = new LlamaEngine({
  maxBatch,
  maxContext: contextSize,
  threads,
  idleTimeoutMinutes: 0,
  gpu: false,
  onLog: (level, message) => {
    if (level === "error" || level === "warn") progress(`engine: ${message}`);
  },
});
await engine.load(model);

const dataDir = await mkdtemp(join(resolve(".darkbloom"), "bench-network-"));
const providerModels = join(dataDir, "providers", "0", "models");
await mkdir(providerModels, { recursive: true });
await link(model.path, modelPath(providerModels, shapeName)); // not synthesized a second time
// The daemon inherits these: the same rows and row size as the engine alone. Its thread count is
// what startLocalNetwork passes to its one provider: the engine's auto rule for the model.
process.env.DARKBLOOM_MAX_CONTEXT = String(contextSize);
process.env.DARKBLOOM_MAX_BATCH = String(maxBatch);
const daemonThreads = chooseThreads({
  modelBytes: model.sizeBytes,
  topology: await detectTopology(),
}).threads;
if (daemonThreads !== threads)
  progress(`note: the full stack's daemon runs on ${daemonThreads} threads, the others on ${threads}`);
progress("starting the local network (coordinator, embedded PostgreSQL, provider daemon)");
const network = await startLocalNetwork({
  port: 0,
  dataDir,
  providers: 1,
  model: shapeName,
  log: (line) => progress(line),
  // The full stack around the engine measured alone (LlamaEngine), as docs/BENCHMARKS.md reports it.
  engine: "llama",
});
const stack = bench.httpTarget({
  baseUrl: network.baseUrl,
  apiKey: network.apiKey,
  model: shapeName,
  maxSockets: maxBatch,
});

let results: bench.TargetResult[];
const pressure = measureCpuPressure();
const measureStarted = performance.now();
try {
  const prompts = new bench.PromptSet(direct.tokenizer, promptTokens);
  results = await bench.runBenchmark([direct, bench.engineTarget(engine, model.id), stack], {
    promptTokens,
    genTokens,
    batches,
    rounds,
    prompts,
    onProgress: progress,
  });
} finally {
  await stack.close();
  await network.stop();
  await engine.close();
  await direct.close();
  await rm(dataDir, { recursive: true, force: true });
}

// 3. The table and the targets of the issue (judged on the median and on the best round).
const checksOf = (of: bench.RoundSummary) => {
  const rates = (target: string, field: "decodeTokensPerSecondAggregate" | "decodeTokensPerSecondSteady") =>
    new Map(
      results.find((r) => r.target === target)?.batches.map((b) => [b.batch, b[of][field]] as const) ?? [],
    );
  return [
    bench.scalingCheck(
      "batch-4 aggregate >= 2x batch 1 (engine)",
      rates("engine", "decodeTokensPerSecondAggregate"),
      4,
      2,
    ),
    bench.overheadCheck(
      "full stack >= 95% of engine alone (aggregate decode at each batch)",
      rates("full stack", "decodeTokensPerSecondAggregate"),
      rates("engine", "decodeTokensPerSecondAggregate"),
      0.95,
    ),
    // Not a target of the issue: the same scaling counted only while all rows decode.
    bench.scalingCheck(
      "(info) batch-4 decode with all rows busy >= 2x batch 1 (engine)",
      rates("engine", "decodeTokensPerSecondSteady"),
      4,
      2,
    ),
  ];
};
const checks = { median: checksOf("median"), best: checksOf("best") };
const measuredMs = performance.now() - measureStarted;
/** Percent of the measuring time in which some task waited for a CPU: how contended the machine was. */
const cpuPressure = percentOf(pressure());
const machine = `${cpus().length} x ${cpus()[0]?.model ?? "CPU"}, Node ${process.version}`;
if (values.json) {
  process.stdout.write(
    `${JSON.stringify(
      {
        machine,
        model: {
          shape: shapeName,
          quantization: model.quantization,
          sizeBytes: model.sizeBytes,
          sha256: model.sha256,
        },
        threads,
        daemonThreads,
        contextSize: direct.contextSize,
        maxBatch,
        promptTokens,
        genTokens,
        batches,
        rounds,
        results,
        checks,
        measuredSeconds: Math.round(measuredMs / 1000),
        cpuPressurePercent: cpuPressure,
      },
      null,
      2,
    )}\n`,
  );
} else {
  process.stdout.write(
    `\nProvider benchmark: ${shapeName} (synthesized, ${model.quantization}, ${(model.sizeBytes / 2 ** 20).toFixed(0)} MiB), ` +
      `${threads} threads, CPU, ${machine}\n` +
      `${promptTokens}-token prompts (text), ${genTokens} greedy tokens per row, ${direct.contextSize} tokens per row, ` +
      `engine and daemon with ${maxBatch} rows, ${summary === "median" ? "median" : "best"} of ${rounds} round${rounds === 1 ? "" : "s"}\n\n`,
  );
  process.stdout.write(
    bench.formatComparison(
      results,
      [
        ["engine", "direct"],
        ["full stack", "engine"],
      ],
      summary,
    ),
  );
  process.stdout.write(`\n${bench.formatWorkload(results, genTokens)}\n`);
  const other: bench.RoundSummary = summary === "median" ? "best" : "median";
  for (const [i, c] of checks[summary].entries()) {
    const alt = checks[other][i];
    process.stdout.write(
      `${c.pass ? "PASS" : "FAIL"}  ${c.name}: ${c.detail}` +
        (alt ? ` (${other} of rounds: ${alt.pass ? "PASS" : "FAIL"}, ${alt.detail})` : "") +
        "\n",
    );
  }
  process.stdout.write(
    `\nMeasuring took ${Math.round(measuredMs / 1000)} s` +
      (cpuPressure === undefined
        ? ".\n"
        : `; some task waited for a CPU ${cpuPressure}% of that time (PSI, this benchmark's own threads included).\n`),
  );
  process.stdout.write(`\n${bench.METRIC_NOTES}`);
}
