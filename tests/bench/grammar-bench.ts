// The cost of grammar-constrained decoding (response_format), side by side in one run: for each
// synthesized model, each GGUF engine (the native core, and the llama engine on node-llama-cpp) decodes
// the same prompts greedily free, under a json_schema grammar whose one string holds the whole answer
// (the greedy path is the free one wherever the grammar allows it, so both decode as many tokens and
// the difference is the grammar's per-token work), under json_object, and under the grammar of
// tool_choice auto answered in text (free text that cannot contain the calls' trigger); and, on the
// engines that report them (the native core), free decoding that reports every token's
// log-probability with 20 alternatives (`top_logprobs: 20`, the most a request may ask). Rounds
// interleave targets.
// Usage: npm run bench:grammar -- [--models tiny,qwen3-0.6b] [--engines native,llama] [--threads N]
//          [--batches 1,4] [--prompt-tokens 64] [--gen-tokens 128] [--rounds 3] [--cache-dir DIR] [--json]
import { cpus } from "node:os";
import { resolve } from "node:path";
import { formatGrammar, readResponseFormat } from "@darkbloom/models/structured";
import { readToolUse, type ToolUse, toolCallGrammar } from "@darkbloom/models/tools";
import { bench, type Engine, LlamaEngine, NativeEngine } from "@darkbloom/provider";
import { benchModel } from "./bench-model.js";
import { type BenchCli, benchCli, shapeFlags, shapeOptions, shapesFlag } from "./cli.js";
import { measureCpuPressure, percentOf } from "./load/pressure.js";

const USAGE =
  "usage: npm run bench:grammar -- [--models tiny,qwen3-0.6b] [--engines native,llama] [--threads N] " +
  "[--batches 1,4] [--prompt-tokens N] [--gen-tokens N] [--rounds N] [--cache-dir DIR] [--json]";
const DEFAULTS = { batches: [1, 4], promptTokens: 64, genTokens: 128, rounds: 3 } as const;

const cli: BenchCli = benchCli("grammar-bench", USAGE, {
  models: { type: "string", default: "tiny,qwen3-0.6b" },
  engines: { type: "string", default: "native,llama" },
  threads: { type: "string", default: "1" },
  ...shapeOptions(DEFAULTS),
});
const { values, progress } = cli;
const shapes = shapesFlag(cli, values.models);
const { batches, promptTokens, genTokens, rounds } = shapeFlags(cli, DEFAULTS);
const threads = cli.flags(() => bench.integerFlag("--threads", values.threads, 1, 1, 256));
const engineNames = String(values.engines)
  .split(",")
  .map((e) => e.trim())
  .filter((e) => e !== "");
for (const name of engineNames) {
  if (name !== "native" && name !== "llama") cli.usage(`--engines: unknown engine ${JSON.stringify(name)}`);
}
if (engineNames.length === 0) cli.usage("--engines needs at least one of native, llama");

/** The grammars timed against free decoding, built as the daemon builds a request's. */
const GRAMMARS = {
  "json_schema (one string)": grammarOf({
    type: "json_schema",
    json_schema: {
      name: "answer",
      strict: true,
      schema: {
        type: "object",
        properties: { answer: { type: "string" } },
        required: ["answer"],
        additionalProperties: false,
      },
    },
  }),
  json_object: grammarOf({ type: "json_object" }),
  // tool_choice auto answered in text: the grammar of text that cannot contain the calls' trigger (in
  // the generic call syntax, which the synthesized models' ChatML template resolves to).
  "tools auto": toolCallGrammar(
    { sectionPrefix: "", prefix: "||call: ", paramsPrefix: "(", suffix: ")", between: undefined },
    readToolUse({
      tools: [
        {
          type: "function",
          function: {
            name: "get_weather",
            parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
          },
        },
      ],
    }) as ToolUse,
  ),
};
/** Free decoding with every token's log-probability and the most alternatives a request may ask for. */
const LOGPROBS = "logprobs 20";
const CONDITIONS = ["free", ...Object.keys(GRAMMARS), LOGPROBS] as const;

function grammarOf(responseFormat: unknown): string {
  const format = readResponseFormat({ response_format: responseFormat });
  if (format === undefined) throw new Error("not a structured format");
  return formatGrammar(format);
}

function engineOf(name: string): Engine {
  const options = {
    maxBatch: Math.max(...batches),
    maxContext: bench.benchContextSize(promptTokens, genTokens),
    threads,
    idleTimeoutMinutes: 0,
    gpu: false as const,
    validator: false as const, // the benchmark's own synthesized files
    onLog: (level: string, message: string) => {
      if (level === "error" || level === "warn") progress(`engine: ${message}`);
    },
  };
  return name === "native" ? new NativeEngine(options) : new LlamaEngine(options);
}

interface ModelRun {
  shape: string;
  sizeBytes: number;
  results: bench.TargetResult[];
  cpuPressurePercent: number | undefined;
}

const runs: ModelRun[] = [];
for (const shape of shapes) {
  const model = await benchModel(resolve(String(values["cache-dir"])), shape, progress);
  const engines = engineNames.map((name) => ({ name, engine: engineOf(name) }));
  const direct = await bench.openDirectTarget(model.path, { threads: 1, contextSize: 1024 });
  const prompts = new bench.PromptSet(direct.tokenizer, promptTokens);
  const targets = engines.flatMap(({ name, engine }) => [
    bench.engineTarget(engine, model.id, `${name} free`),
    ...Object.entries(GRAMMARS).map(([condition, grammar]) =>
      bench.engineTarget(engine, model.id, `${name} ${condition}`, { grammar }),
    ),
    ...(engine.logprobs?.(model)
      ? [bench.engineTarget(engine, model.id, `${name} ${LOGPROBS}`, { logprobs: 20 })]
      : []),
  ]);
  const pressure = measureCpuPressure();
  try {
    for (const { engine } of engines) await engine.load(model);
    const results = await bench.runBenchmark(targets, {
      promptTokens,
      genTokens,
      batches,
      rounds,
      prompts,
      onProgress: (line) => progress(`${shape}: ${line}`),
    });
    runs.push({ shape, sizeBytes: model.sizeBytes, results, cpuPressurePercent: percentOf(pressure()) });
  } finally {
    for (const { engine } of engines) await engine.close().catch(() => {});
    await direct.close().catch(() => {});
  }
}

const machine = `${cpus().length} logical CPUs, ${cpus()[0]?.model ?? "CPU"}, Node ${process.version}`;
if (values.json) {
  process.stdout.write(
    `${JSON.stringify({ machine, threads, batches, promptTokens, genTokens, rounds, runs }, null, 2)}\n`,
  );
} else {
  process.stdout.write(
    `\nGrammar-constrained decoding and log-probabilities: ${machine}\n${promptTokens}-token prompts, up to ${genTokens} greedy ` +
      `tokens per row, ${threads} thread${threads === 1 ? "" : "s"}, median of ${rounds} round` +
      `${rounds === 1 ? "" : "s"}; decode tok/s while every row decodes (ratio to free decoding)\n`,
  );
  for (const run of runs) {
    const byName = new Map(run.results.map((r) => [r.target, r] as const));
    const measured = (name: string, b: number) =>
      byName.get(name)?.batches.find((x) => x.batch === b)?.median;
    process.stdout.write(
      `\n${run.shape} (${(run.sizeBytes / 2 ** 20).toFixed(1)} MiB Q8_0)` +
        (run.cpuPressurePercent === undefined ? "" : `; CPU pressure ${run.cpuPressurePercent}%`) +
        "\n",
    );
    const rows: string[][] = [["engine", "batch", ...CONDITIONS.map((c) => `${c}`), "tokens per row"]];
    for (const engine of engineNames) {
      for (const b of batches) {
        const free = measured(`${engine} free`, b)?.decodeTokensPerSecondSteady ?? Number.NaN;
        rows.push([
          engine,
          String(b),
          ...CONDITIONS.map((c) => {
            const rate = measured(`${engine} ${c}`, b)?.decodeTokensPerSecondSteady;
            if (rate === undefined) return "-"; // not served by this engine
            return c === "free" ? rate.toFixed(1) : `${rate.toFixed(1)} (${(rate / free).toFixed(2)})`;
          }),
          CONDITIONS.map((c) => ((measured(`${engine} ${c}`, b)?.completionTokens ?? 0) / b).toFixed(0)).join(
            " / ",
          ),
        ]);
      }
    }
    process.stdout.write(`${bench.alignColumns(rows)}\n`);
  }
}
