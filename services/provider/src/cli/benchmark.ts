import { cpus } from "node:os";
import type { Command } from "commander";
import { BenchFlagError, batchesFlag, integerFlag } from "../bench/flags.js";
import { ConfigError } from "../config/config.js";
import { selectModels } from "../config/model-inventory.js";
import type { ModelFile } from "../engine/engine.js";
import { chooseThreads } from "../engine/threads.js";
import { detectTopology } from "../machine/topology.js";
import type { CliContext } from "./context.js";
import { UsageError } from "./io.js";
import { formatBytes } from "./progress.js";
import { addSettingOptions, resolveFromOptions } from "./settings-options.js";

const DEFAULTS = { promptTokens: 256, genTokens: 64, batches: [1, 2, 4], rounds: 1 };

/**
 * `benchmark`: the llama engine and node-llama-cpp used directly, side by side on one model of the data
 * directory: TTFT, prefill and decode rates at each batch size, and the engine/direct ratio.
 */
export function addBenchmarkCommand(program: Command, context: CliContext): void {
  const command = program
    .command("benchmark")
    .description("measure the engine against node-llama-cpp used directly on a model (CPU, greedy)");
  addSettingOptions(command, ["dataDir", "models", "threads", "maxContext"]);
  command
    .option("--prompt-tokens <n>", `prompt length per row in tokens (default ${DEFAULTS.promptTokens})`)
    .option("--gen-tokens <n>", `completion tokens per row (default ${DEFAULTS.genTokens})`)
    .option("--batches <list>", `batch sizes, comma-separated (default ${DEFAULTS.batches.join(",")})`)
    .option("--rounds <n>", `measurements per batch size; the median is shown (default ${DEFAULTS.rounds})`)
    .option("--json", "print JSON")
    .action(async (opts: Record<string, unknown>) => {
      let shape: { promptTokens: number; genTokens: number; batches: number[]; rounds: number };
      try {
        shape = {
          promptTokens: integerFlag(
            "--prompt-tokens",
            opts.promptTokens,
            DEFAULTS.promptTokens,
            1,
            1_000_000,
          ),
          genTokens: integerFlag("--gen-tokens", opts.genTokens, DEFAULTS.genTokens, 2, 1_000_000),
          batches: batchesFlag("--batches", opts.batches, DEFAULTS.batches),
          rounds: integerFlag("--rounds", opts.rounds, DEFAULTS.rounds, 1, 100),
        };
      } catch (error) {
        if (error instanceof BenchFlagError) throw new UsageError(error.message);
        throw error;
      }
      const { config, sources } = resolveFromOptions(opts, context);
      if (sources.models.kind === "flag" && config.models.length > 1)
        throw new UsageError("benchmark: give one --model");
      let model: ModelFile;
      try {
        const [first] = await selectModels(config.modelsDir, config.models.slice(0, 1));
        if (!first) throw new ConfigError(`no models in ${config.modelsDir}`);
        model = first;
      } catch (error) {
        if (error instanceof ConfigError) throw new UsageError(error.message);
        throw error;
      }
      if (model.format === "mlx")
        throw new UsageError(
          `benchmark measures GGUF models (the llama engine against node-llama-cpp direct); ${model.id} is an MLX checkpoint`,
        );
      const bench = await import("../bench/index.js");
      const { LlamaEngine } = await import("../engine/llama/llama-engine.js");
      // The configured max context sizes the daemon's rows; a default one (tens of thousands of tokens
      // per row) would only cost memory here, so the benchmark sizes rows to its workload.
      const requested =
        sources.maxContext.kind === "default"
          ? bench.benchContextSize(shape.promptTokens, shape.genTokens)
          : config.maxContext;
      const contextSize = Math.min(requested, model.contextLength > 0 ? model.contextLength : requested);
      if (shape.promptTokens + shape.genTokens > contextSize) {
        throw new UsageError(
          `--prompt-tokens + --gen-tokens (${shape.promptTokens + shape.genTokens}) exceed the context of ${contextSize} tokens`,
        );
      }
      const progress = (line: string) => context.io.stderr(`darkbloom: ${line}\n`);
      // Both targets run on the same count: "auto" is resolved here as the engine would resolve it.
      let threads: number;
      let threadsNote = "";
      if (config.threads === "auto") {
        const choice = chooseThreads({ modelBytes: model.sizeBytes, topology: await detectTopology() });
        threads = choice.threads;
        threadsNote = ` (auto: ${choice.reason.replace(/^[^:]*: /, "")})`;
      } else threads = config.threads;
      progress(
        `loading ${model.id} (${formatBytes(model.sizeBytes)}) twice: node-llama-cpp direct and the engine`,
      );
      const direct = await bench.openDirectTarget(model.path, {
        threads,
        contextSize,
        onLog: (line) => progress(`llama.cpp: ${line}`),
      });
      const engine = new LlamaEngine({
        maxBatch: Math.max(...shape.batches),
        maxContext: contextSize,
        threads,
        idleTimeoutMinutes: 0,
        gpu: false,
        onLog: (level, message) => {
          if (level === "error" || level === "warn") progress(`engine: ${message}`);
        },
      });
      try {
        await engine.load(model);
        const prompts = new bench.PromptSet(direct.tokenizer, shape.promptTokens);
        const results = await bench.runBenchmark([bench.engineTarget(engine, model.id), direct], {
          ...shape,
          prompts,
          onProgress: progress,
        });
        const machine = `${cpus().length} x ${cpus()[0]?.model ?? "CPU"}, Node ${process.version}`;
        if (opts.json) {
          context.io.stdout(
            `${JSON.stringify(
              {
                machine,
                model: { id: model.id, quantization: model.quantization, sizeBytes: model.sizeBytes },
                threads,
                contextSize: direct.contextSize,
                ...shape,
                results,
              },
              null,
              2,
            )}\n`,
          );
          return;
        }
        context.io.stdout(
          `darkbloom benchmark: ${model.id} (${model.quantization}, ${formatBytes(model.sizeBytes)}), ` +
            `${threads} thread${threads === 1 ? "" : "s"}${threadsNote}, CPU, ${machine}\n` +
            `${shape.promptTokens}-token prompts, ${shape.genTokens} greedy tokens per row, ` +
            `${direct.contextSize} tokens per row, median of ${shape.rounds} round${shape.rounds === 1 ? "" : "s"}\n\n`,
        );
        context.io.stdout(bench.formatComparison(results, [["engine", "direct"]]));
        context.io.stdout(`\n${bench.formatWorkload(results, shape.genTokens)}`);
        context.io.stdout(`\n${bench.METRIC_NOTES}`);
      } finally {
        await engine.close().catch(() => {});
        await direct.close().catch(() => {});
      }
    });
}
