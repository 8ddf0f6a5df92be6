// The MLX batching core against MLX's own generation (issue 17, item 6), side by side in one run per
// model, on a synthesized mlx-community-style checkpoint (random weights, 4- or 8-bit):
//   core:   @darkbloom/native/mlx's scheduler on token ids (the backend alone);
//   engine: the daemon's mlx engine on the same raw text (tokenizer, detokenizer, stop handling);
//   mlx-lm: mlx-lm's generate_step (batch 1) and BatchGenerator (above) in a Python child on the same
//           token ids (tests/bench/mlx/mlx_lm_generation.py), where `mlx` and `mlx_lm` import.
// Runs where the MLX addon is built (DARKBLOOM_MLX_DIR, see native/README.md); never in CI.
// Usage: npm run bench:mlx -- [--models tiny,qwen3-0.6b] [--bits 4|8] [--batches 1,2,4]
//          [--prompt-tokens 256] [--gen-tokens 64] [--rounds 3] [--python python3]
//          [--summary median|best] [--cache-dir DIR] [--json]
import { mkdir, rm, stat } from "node:fs/promises";
import { cpus } from "node:os";
import { join, resolve } from "node:path";
import { ModelTokenizer, synthesizeMlxCheckpoint, writeVocabularyFromCheckpoint } from "@darkbloom/models";
import { MlxModel, mlxAvailable, mlxUnavailableReason } from "@darkbloom/native/mlx";
import { bench, MlxEngine, type ModelShapeName, readCheckpoint } from "@darkbloom/provider";
import { getLlama, LlamaLogLevel, type Token } from "node-llama-cpp";
import { type BenchCli, benchCli, shapeFlags, shapeOptions, shapesFlag, summaryFlag } from "../cli.js";
import { measureCpuPressure } from "../load/pressure.js";
import { formatAgreement, GreedyAgreement } from "./agreement.js";
import { coreTarget, MlxLmUnavailableError, mlxLmTarget, type PromptTokens } from "./targets.js";

const CORE = "core";
const ENGINE = "engine";
const MLX_LM = "mlx-lm";
const USAGE =
  "usage: npm run bench:mlx -- [--models tiny,qwen3-0.6b] [--bits 4|8] [--batches 1,2,4] " +
  "[--prompt-tokens N] [--gen-tokens N] [--rounds N] [--python PATH] [--summary median|best] " +
  "[--cache-dir DIR] [--json]";

const SHAPE = { batches: [1, 2, 4], promptTokens: 256, genTokens: 64, rounds: 3 };
const cli: BenchCli = benchCli("mlx-bench", USAGE, {
  ...shapeOptions(SHAPE),
  models: { type: "string", default: "tiny,qwen3-0.6b" },
  bits: { type: "string", default: "4" },
  python: { type: "string", default: "python3" },
  summary: { type: "string", default: "median" },
});
const { values, progress } = cli;
const shapes = shapesFlag(cli, values.models);
if (values.bits !== "4" && values.bits !== "8") cli.usage("--bits must be 4 or 8");
const bits = values.bits === "4" ? 4 : 8;
const summary = summaryFlag(cli, values.summary);
const python = String(values.python);
const measured = shapeFlags(cli, SHAPE);
const { batches, promptTokens, genTokens, rounds } = measured;

if (!mlxAvailable()) {
  progress(`the MLX addon is not available here: ${mlxUnavailableReason() ?? "not built"}`);
  progress("build it against an MLX installation: DARKBLOOM_MLX_DIR=... npm run build:native");
  process.exit(1);
}

const cacheDir = resolve(String(values["cache-dir"]));
const contextSize = bench.benchContextSize(promptTokens, genTokens);
const rows = Math.max(...batches);

/** The synthesized checkpoint of `shape` (seed 0), written once into the cache and reused. */
async function benchCheckpoint(shape: ModelShapeName): Promise<string> {
  const dir = join(cacheDir, `${shape}-mlx-${bits}bit`);
  const present = await stat(join(dir, "config.json")).then(
    () => true,
    () => false,
  );
  if (!present) {
    await mkdir(cacheDir, { recursive: true });
    await rm(`${dir}.partial`, { recursive: true, force: true });
    progress(`synthesizing ${shape} (MLX, ${bits}-bit) into ${dir}`);
    // Written as <dir>.partial and renamed when complete (an interrupted run leaves no checkpoint).
    await synthesizeMlxCheckpoint({ shape, seed: 0, bits, outDir: dir });
  }
  return dir;
}

interface ModelRun {
  shape: string;
  checkpoint: string;
  results: bench.TargetResult[];
  agreement: string;
  mlxLm: { mlx: string; mlxLm: string; device: string } | { unavailable: string };
}

const llama = await getLlama({
  gpu: false,
  build: "never",
  skipDownload: true,
  maxThreads: 1,
  // Loading a vocabulary-only file makes llama.cpp complain of missing tensors (node-llama-cpp first
  // simulates a full load to estimate memory): expected, and nothing this benchmark reports.
  logLevel: LlamaLogLevel.error,
  logger: () => {},
});
const runs: ModelRun[] = [];
const pressure = measureCpuPressure();
const started = performance.now();
for (const shapeName of shapes) {
  const dir = await benchCheckpoint(shapeName);
  const vocabulary = `${dir}.vocab.gguf`;
  await writeVocabularyFromCheckpoint(dir, vocabulary);
  const tokenizer = await ModelTokenizer.open(llama, vocabulary);
  const vocab = tokenizer.model;
  const benchTokenizer: bench.BenchTokenizer = {
    tokenize: (text) => vocab.tokenize(text, false),
    detokenize: (tokens) => vocab.detokenize(tokens as Token[]),
    addedTokens: vocab.tokens.bos != null && vocab.tokens.shouldPrependBosToken ? 1 : 0,
  };
  const prompts = new bench.PromptSet(benchTokenizer, promptTokens);
  const promptIds: PromptTokens = (text) =>
    Int32Array.from(tokenizer.render({ kind: "text", prompt: text }).tokens);
  const agreement = new GreedyAgreement();
  const record = (target: string) => (prompt: string, tokens: readonly number[]) =>
    agreement.record(target, prompt, tokens);

  const model = await MlxModel.load(dir);
  const engine = new MlxEngine({
    maxBatch: rows,
    maxContext: contextSize,
    threads: 1,
    idleTimeoutMinutes: 0,
    validator: false,
    vocabularyCacheDir: join(cacheDir, "vocabularies"),
    onLog: (level, message) => {
      if (level === "error" || level === "warn") progress(`engine: ${message}`);
    },
  });
  const targets: bench.BenchTarget[] = [];
  let mlxLm: ModelRun["mlxLm"];
  try {
    targets.push(
      await coreTarget(model, promptIds, {
        name: CORE,
        rows,
        contextPerRow: contextSize,
        prefillChunk: 512,
        onRow: record(CORE),
      }),
    );
    const file = await readCheckpoint(dir, `${shapeName}-mlx-${bits}bit`);
    await engine.load(file);
    targets.push(bench.engineTarget(engine, file.id, ENGINE));
    try {
      const reference = await mlxLmTarget(python, dir, promptIds, MLX_LM, record(MLX_LM));
      mlxLm = reference.info;
      targets.push(reference);
    } catch (error) {
      if (!(error instanceof MlxLmUnavailableError)) throw error;
      mlxLm = { unavailable: error.message };
      progress(`${error.message}; measuring without it (PYTHONPATH must reach mlx and mlx_lm)`);
    }
    const results = await bench.runBenchmark(targets, { ...measured, prompts, onProgress: progress });
    runs.push({
      shape: shapeName,
      checkpoint: dir,
      results,
      agreement: formatAgreement(CORE, MLX_LM, agreement.compare(CORE, MLX_LM)),
      mlxLm,
    });
  } finally {
    for (const target of targets) await target.close();
    await engine.close();
    await model.close();
    await tokenizer.dispose();
  }
}
await llama.dispose();
const cpuPressure = pressure();
const measuredSeconds = Math.round((performance.now() - started) / 1000);
const machine = `${cpus().length} x ${cpus()[0]?.model ?? "CPU"}, Node ${process.version}`;

if (values.json) {
  process.stdout.write(
    `${JSON.stringify({ machine, bits, promptTokens, genTokens, rounds, runs, measuredSeconds, cpuPressure }, null, 2)}\n`,
  );
} else {
  for (const run of runs) {
    const reference =
      "unavailable" in run.mlxLm
        ? `mlx-lm not measured: ${run.mlxLm.unavailable}`
        : `mlx ${run.mlxLm.mlx}, mlx-lm ${run.mlxLm.mlxLm} (${run.mlxLm.device})`;
    process.stdout.write(
      `\n## ${run.shape} (synthesized MLX checkpoint, ${bits}-bit), ${machine}\n${reference}\n` +
        `${promptTokens}-token prompts, ${genTokens} greedy tokens per row, ${contextSize} tokens per row, ` +
        `${summary} of ${rounds} round${rounds === 1 ? "" : "s"}\n\n`,
    );
    const names = new Set(run.results.map((r) => r.target));
    const ratios: bench.RatioColumn[] = names.has(MLX_LM)
      ? [
          [CORE, MLX_LM],
          [ENGINE, MLX_LM],
        ]
      : [];
    process.stdout.write(bench.formatComparison(run.results, ratios, summary, bench.WALL_METRICS));
    process.stdout.write(`\n${bench.formatWorkload(run.results, genTokens)}`);
    if (names.has(MLX_LM)) process.stdout.write(`${run.agreement}\n`);
  }
  process.stdout.write(
    `\nMeasuring took ${measuredSeconds} s` +
      (cpuPressure === undefined
        ? ".\n"
        : `; some task waited for a CPU ${(cpuPressure * 100).toFixed(1)}% of that time.\n`),
  );
  process.stdout.write(`\n${bench.METRIC_NOTES}${bench.WALL_METRIC_NOTE}`);
}
