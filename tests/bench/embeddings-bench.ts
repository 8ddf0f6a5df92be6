// The daemon's embeddings against node-llama-cpp's own, side by side in one run: for each synthesized
// embedding model, the llama engine's embed (what /v1/embeddings runs on a provider: its embedding
// runner, the inputs' tokens as the coordinator counts them, L2-normalized vectors) and
// node-llama-cpp's LlamaEmbeddingContext alone (the baseline: the same model file, threads, context
// and inputs) embed the same requests. Rounds interleave the two; the figures are medians.
// Usage: npm run bench:embeddings -- [--models tiny-embed,qwen3-embedding-0.6b] [--threads N]
//          [--inputs N] [--input-tokens N] [--rounds N] [--cache-dir DIR] [--json]
import { cpus } from "node:os";
import { resolve } from "node:path";
import { bench, LlamaEngine } from "@darkbloom/provider";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { benchModel } from "./bench-model.js";
import { type BenchCli, benchCli, shapesFlag } from "./cli.js";
import { measureCpuPressure, percentOf } from "./load/pressure.js";

const USAGE =
  "usage: npm run bench:embeddings -- [--models tiny-embed,qwen3-embedding-0.6b] [--threads N] " +
  "[--inputs N] [--input-tokens N] [--rounds N] [--cache-dir DIR] [--json]";

const cli: BenchCli = benchCli("embeddings-bench", USAGE, {
  models: { type: "string", default: "tiny-embed,qwen3-embedding-0.6b" },
  threads: { type: "string", default: "1" },
  inputs: { type: "string", default: "32" },
  "input-tokens": { type: "string", default: "64" },
  rounds: { type: "string", default: "3" },
  "cache-dir": { type: "string", default: ".darkbloom/bench-models" },
  json: { type: "boolean", default: false },
});
const { values, progress } = cli;
const shapes = shapesFlag(cli, values.models);
const threads = cli.flags(() => bench.integerFlag("--threads", values.threads, 1, 1, 256));
const inputs = cli.flags(() => bench.integerFlag("--inputs", values.inputs, 32, 1, 2048));
const inputTokens = cli.flags(() => bench.integerFlag("--input-tokens", values["input-tokens"], 64, 1, 8000));
const rounds = cli.flags(() => bench.integerFlag("--rounds", values.rounds, 3, 1, 100));
/** Room for the longest input and its end token. */
const contextSize = inputTokens + 64;

interface Measured {
  /** Seconds per request of `inputs` inputs, median over the rounds. */
  seconds: number;
  inputsPerSecond: number;
  tokensPerSecond: number;
}

interface ModelRun {
  shape: string;
  sizeBytes: number;
  /** Tokens evaluated per request (the inputs with their end tokens), as the engine counted them. */
  tokens: number;
  engine: Measured;
  nodeLlamaCpp: Measured;
  cpuPressurePercent: number | undefined;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

const llama = await getLlama({
  gpu: false,
  build: "never",
  logLevel: LlamaLogLevel.error,
  maxThreads: threads,
});
const runs: ModelRun[] = [];
for (const shape of shapes) {
  const model = await benchModel(resolve(String(values["cache-dir"])), shape, progress);
  if (model.embedding === undefined) cli.usage(`--models: ${shape} is not an embedding model`);
  const engine = new LlamaEngine({
    maxBatch: 1,
    maxContext: contextSize,
    threads,
    idleTimeoutMinutes: 0,
    gpu: false,
    validator: false, // the benchmark's own synthesized file
    onLog: (level, message) => {
      if (level === "error" || level === "warn") progress(`engine: ${message}`);
    },
  });
  const baselineModel = await llama.loadModel({ modelPath: model.path, gpuLayers: 0 });
  const baseline = await baselineModel.createEmbeddingContext({
    contextSize,
    batchSize: contextSize,
    threads,
  });
  const pressure = measureCpuPressure();
  try {
    await engine.load(model);
    // Distinct texts of about `inputTokens` tokens each (the filler the other benchmarks prompt with).
    const texts = Array.from({ length: inputs }, (_, i) => {
      const words = bench.fillerText(i, inputTokens).split(" ");
      let text = `${i}.`;
      for (const word of words) {
        if (baselineModel.tokenize(`${text} ${word}`).length >= inputTokens) break;
        text = `${text} ${word}`;
      }
      return text;
    });
    const request = {
      id: "bench",
      model: model.id,
      inputs: texts.map((text) => ({ kind: "embedding" as const, text })),
    };
    const first = await engine.embed(request).done; // warm: the embedding context is made on first use
    const tokens = first.promptTokens.reduce((sum, n) => sum + n, 0);
    for (const text of texts) await baseline.getEmbeddingFor(text);
    const times = { engine: [] as number[], nodeLlamaCpp: [] as number[] };
    for (let round = 0; round < rounds; round++) {
      let t = performance.now();
      await engine.embed({ ...request, id: `bench-${round}` }).done;
      times.engine.push((performance.now() - t) / 1000);
      t = performance.now();
      for (const text of texts) await baseline.getEmbeddingFor(text);
      times.nodeLlamaCpp.push((performance.now() - t) / 1000);
      progress(
        `${shape} round ${round + 1}/${rounds}: engine ${times.engine.at(-1)?.toFixed(3)} s, ` +
          `node-llama-cpp ${times.nodeLlamaCpp.at(-1)?.toFixed(3)} s`,
      );
    }
    const measured = (xs: number[]): Measured => {
      const seconds = median(xs);
      return { seconds, inputsPerSecond: inputs / seconds, tokensPerSecond: tokens / seconds };
    };
    runs.push({
      shape,
      sizeBytes: model.sizeBytes,
      tokens,
      engine: measured(times.engine),
      nodeLlamaCpp: measured(times.nodeLlamaCpp),
      cpuPressurePercent: percentOf(pressure()),
    });
  } finally {
    await engine.close().catch(() => {});
    await baseline.dispose().catch(() => {});
    await baselineModel.dispose().catch(() => {});
  }
}
await llama.dispose();

const machine = `${cpus().length} logical CPUs, ${cpus()[0]?.model ?? "CPU"}, Node ${process.version}`;
if (values.json) {
  process.stdout.write(
    `${JSON.stringify({ machine, threads, inputs, inputTokens, rounds, runs }, null, 2)}\n`,
  );
} else {
  process.stdout.write(
    `\nEmbeddings: ${machine}\nrequests of ${inputs} inputs of ~${inputTokens} tokens, ${threads} ` +
      `thread${threads === 1 ? "" : "s"}, median of ${rounds} round${rounds === 1 ? "" : "s"}\n\n`,
  );
  const rows: string[][] = [
    [
      "model",
      "MiB",
      "tokens",
      "engine inputs/s",
      "node-llama-cpp inputs/s",
      "ratio",
      "engine tok/s",
      "CPU pressure",
    ],
  ];
  for (const r of runs) {
    rows.push([
      r.shape,
      (r.sizeBytes / 2 ** 20).toFixed(1),
      String(r.tokens),
      r.engine.inputsPerSecond.toFixed(1),
      r.nodeLlamaCpp.inputsPerSecond.toFixed(1),
      (r.engine.inputsPerSecond / r.nodeLlamaCpp.inputsPerSecond).toFixed(2),
      r.engine.tokensPerSecond.toFixed(0),
      r.cpuPressurePercent === undefined ? "-" : `${r.cpuPressurePercent}%`,
    ]);
  }
  process.stdout.write(`${bench.alignColumns(rows)}\n`);
}
