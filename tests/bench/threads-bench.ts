// Engine thread counts side by side: for each synthesized model, the LlamaEngine at every thread count
// asked for, the old default (every logical CPU), the new default (threads "auto", the rule in
// services/provider/src/engine/threads.ts) and the best explicit count, in one run, rounds interleaved.
// Usage: npm run bench:threads -- [--models tiny,qwen3-0.6b] [--threads 1,2] [--batches 1,4]
//          [--prompt-tokens 256] [--gen-tokens 128] [--rounds 3] [--cache-dir DIR] [--json]
import { availableParallelism, cpus } from "node:os";
import { resolve } from "node:path";
import { bench, chooseThreads, detectTopology, LlamaEngine } from "@darkbloom/provider";
import { benchModel } from "./bench-model.js";
import { type BenchCli, benchCli, shapesFlag } from "./cli.js";
import { measureCpuPressure, percentOf } from "./load/pressure.js";

const USAGE =
  "usage: npm run bench:threads -- [--models tiny,qwen3-0.6b] [--threads 1,2] [--batches 1,4] " +
  "[--prompt-tokens N] [--gen-tokens N] [--rounds N] [--cache-dir DIR] [--json]";

const cli: BenchCli = benchCli("threads-bench", USAGE, {
  models: { type: "string", default: "tiny,qwen3-0.6b" },
  threads: { type: "string" },
  batches: { type: "string", default: "1,4" },
  "prompt-tokens": { type: "string", default: "256" },
  "gen-tokens": { type: "string", default: "128" },
  rounds: { type: "string", default: "3" },
  "cache-dir": { type: "string", default: ".darkbloom/bench-models" },
  json: { type: "boolean", default: false },
});
const { values, progress } = cli;
const shapes = shapesFlag(cli, values.models);
const topology = await detectTopology();
const oldDefault = Math.max(1, availableParallelism()); // the engine's default before "auto"
const { explicit, batches, promptTokens, genTokens, rounds } = cli.flags(() => ({
  // Default: every count from 1 to the logical CPUs (at most 8 of them, spread out on big machines).
  explicit:
    values.threads === undefined
      ? spread(oldDefault)
      : bench.batchesFlag("--threads", values.threads, [1]).sort((a, b) => a - b),
  batches: bench.batchesFlag("--batches", values.batches, [1, 4]),
  promptTokens: bench.integerFlag("--prompt-tokens", values["prompt-tokens"], 256, 1, 100_000),
  genTokens: bench.integerFlag("--gen-tokens", values["gen-tokens"], 128, 2, 100_000),
  rounds: bench.integerFlag("--rounds", values.rounds, 3, 1, 100),
}));
const maxBatch = Math.max(...batches);
const contextSize = bench.benchContextSize(promptTokens, genTokens);

function spread(n: number): number[] {
  if (n <= 8) return Array.from({ length: n }, (_, i) => i + 1);
  return [...new Set([1, 2, 4, Math.floor(n / 4), Math.floor(n / 2), n])].sort((a, b) => a - b);
}

interface ModelRun {
  shape: string;
  sizeBytes: number;
  autoThreads: number;
  autoReason: string;
  results: bench.TargetResult[];
  cpuPressurePercent: number | undefined;
}

const runs: ModelRun[] = [];
for (const shape of shapes) {
  const model = await benchModel(resolve(String(values["cache-dir"])), shape, progress);
  const choice = chooseThreads({ modelBytes: model.sizeBytes, topology });
  progress(`${shape}: ${(model.sizeBytes / 2 ** 20).toFixed(1)} MiB; auto: ${choice.reason}`);
  // One engine per thread count, all loaded for the whole run: each round runs every count in turn,
  // so a noisy stretch of the shared machine touches them alike. "auto" is its own engine (the
  // option the daemon passes), checked to resolve to the count the rule printed above.
  const engines = new Map<string, LlamaEngine>();
  for (const t of explicit) engines.set(`${t} thread${t === 1 ? "" : "s"}`, engineOf(t));
  const auto = engineOf("auto");
  engines.set("auto", auto);
  // The prompts are cut to token counts with the model's own tokenizer (a direct target's, loaded
  // for that alone: it never runs a batch).
  const direct = await bench.openDirectTarget(model.path, { threads: 1, contextSize: 1024 });
  const prompts = new bench.PromptSet(direct.tokenizer, promptTokens);
  const targets = [...engines.entries()].map(([name, engine]) => bench.engineTarget(engine, model.id, name));
  const pressure = measureCpuPressure();
  let results: bench.TargetResult[];
  try {
    for (const engine of engines.values()) await engine.load(model);
    const resolved = auto.threadsFor(model.id);
    if (resolved !== choice.threads)
      throw new Error(`the engine resolved auto to ${resolved} threads, the rule to ${choice.threads}`);
    results = await bench.runBenchmark(targets, {
      promptTokens,
      genTokens,
      batches,
      rounds,
      prompts,
      onProgress: (line) => progress(`${shape}: ${line}`),
    });
  } finally {
    for (const engine of engines.values()) await engine.close().catch(() => {});
    await direct.close().catch(() => {});
  }
  runs.push({
    shape,
    sizeBytes: model.sizeBytes,
    autoThreads: choice.threads,
    autoReason: choice.reason,
    results,
    cpuPressurePercent: percentOf(pressure()),
  });
}

function engineOf(threads: number | "auto"): LlamaEngine {
  return new LlamaEngine({
    maxBatch,
    maxContext: contextSize,
    threads,
    idleTimeoutMinutes: 0,
    gpu: false,
    validator: false, // the benchmark's own synthesized files
    onLog: (level, message) => {
      if (level === "error" || level === "warn") progress(`engine: ${message}`);
    },
  });
}

const machine =
  `${cpus().length} logical CPUs (${topology.physicalCores} physical cores, ${topology.source}), ` +
  `${cpus()[0]?.model ?? "CPU"}, Node ${process.version}`;
const field = (r: bench.TargetResult | undefined, batch: number) =>
  r?.batches.find((b) => b.batch === batch)?.median;
const label = (t: number) => `${t} thread${t === 1 ? "" : "s"}`;

if (values.json) {
  process.stdout.write(
    `${JSON.stringify({ machine, oldDefault, explicit, batches, promptTokens, genTokens, rounds, contextSize, runs }, null, 2)}\n`,
  );
} else {
  process.stdout.write(
    `\nEngine threads: ${machine}\n${promptTokens}-token prompts, ${genTokens} greedy tokens per row, ` +
      `engines with ${maxBatch} rows, median of ${rounds} round${rounds === 1 ? "" : "s"}; ` +
      `old default = ${label(oldDefault)} (every logical CPU)\n`,
  );
  for (const run of runs) {
    const byName = new Map(run.results.map((r) => [r.target, r] as const));
    process.stdout.write(
      `\n${run.shape} (${(run.sizeBytes / 2 ** 20).toFixed(1)} MiB Q8_0): auto = ${run.autoReason}` +
        (run.cpuPressurePercent === undefined ? "" : `; CPU pressure ${run.cpuPressurePercent}%`) +
        "\n",
    );
    const rows: string[][] = [
      [
        "target",
        ...batches.flatMap((b) => [`b${b} decode tok/s agg`, `b${b} ms/token/row`, `b${b} prefill tok/s`]),
      ],
    ];
    for (const [name, r] of byName) {
      rows.push([
        name === "auto" ? `auto (${label(run.autoThreads)})` : name,
        ...batches.flatMap((b) => {
          const m = field(r, b);
          return m
            ? [
                m.decodeTokensPerSecondAggregate.toFixed(1),
                (1000 / m.decodeTokensPerSecondPerRow).toFixed(2),
                m.prefillTokensPerSecond.toFixed(0),
              ]
            : ["-", "-", "-"];
        }),
      ]);
    }
    process.stdout.write(`${bench.alignColumns(rows)}\n`);
    // The summary the issue asks for: aggregate decode at the widest batch, old vs new vs best.
    for (const b of batches) {
      const rate = (name: string) => field(byName.get(name), b)?.decodeTokensPerSecondAggregate ?? Number.NaN;
      const best = explicit.reduce((a, t) => (rate(label(t)) > rate(label(a)) ? t : a), explicit[0] ?? 1);
      const old = explicit.includes(oldDefault) ? rate(label(oldDefault)) : Number.NaN;
      const now = rate("auto");
      process.stdout.write(
        `batch ${b}: old default ${old.toFixed(1)}, new default ${now.toFixed(1)} (${label(run.autoThreads)}), ` +
          `best explicit ${rate(label(best)).toFixed(1)} (${label(best)}): new/best ${(now / rate(label(best))).toFixed(2)}, ` +
          `new/old ${(now / old).toFixed(2)} tok/s aggregate decode\n`,
      );
    }
  }
}
