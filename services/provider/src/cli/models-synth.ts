import { mkdir, stat } from "node:fs/promises";
import {
  isModelShapeName,
  MODEL_SHAPES,
  SYNTH_QUANTIZATIONS,
  type SynthQuantization,
  synthesizeModel,
} from "@darkbloom/models";
import type { Command } from "commander";
import { modelPath } from "../config/model-inventory.js";
import type { CliContext } from "./context.js";
import { CliFailure, UsageError } from "./io.js";
import { formatBytes, progressBar } from "./progress.js";
import { addSettingOptions, resolveFromOptions } from "./settings-options.js";

const MODEL_ID = /^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$/;

/** `models synth <shape>`: writes a GGUF model of a real architecture with seeded random weights. */
export function addModelsSynthCommand(models: Command, context: CliContext): void {
  const command = models
    .command("synth")
    .description(`synthesize a model (shapes: ${Object.keys(MODEL_SHAPES).join(", ")})`)
    .argument("<shape>", "model shape");
  addSettingOptions(command, ["dataDir"]);
  command
    .option("--seed <n>", "weights seed (same seed, same file; default 0)")
    .option("--quant <type>", `weight type: ${SYNTH_QUANTIZATIONS.join(", ")} (default Q8_0)`)
    .option("--name <id>", "model id (default: the shape)")
    .option("--force", "overwrite an existing model of that id")
    .action(async (shape: string, opts: Record<string, unknown>) => {
      if (!isModelShapeName(shape)) {
        throw new UsageError(
          `models synth: unknown shape ${JSON.stringify(shape)} (expected one of: ${Object.keys(MODEL_SHAPES).join(", ")})`,
        );
      }
      const seedText = typeof opts.seed === "string" ? opts.seed : "0";
      if (!/^\d{1,10}$/.test(seedText) || Number(seedText) > 0xffffffff) {
        throw new UsageError(`--seed must be a whole number from 0 to 4294967295 (got ${seedText})`);
      }
      const quant = (typeof opts.quant === "string" ? opts.quant.toUpperCase() : "Q8_0") as SynthQuantization;
      if (!SYNTH_QUANTIZATIONS.includes(quant)) {
        throw new UsageError(
          `--quant must be one of ${SYNTH_QUANTIZATIONS.join(", ")} (got ${String(opts.quant)})`,
        );
      }
      const id = typeof opts.name === "string" ? opts.name : shape;
      if (!MODEL_ID.test(id))
        throw new UsageError(`--name must be a model id of [A-Za-z0-9._:-] (got ${JSON.stringify(id)})`);
      const { config } = resolveFromOptions(opts, context);
      const outPath = modelPath(config.modelsDir, id);
      if (
        !opts.force &&
        (await stat(outPath).then(
          () => true,
          () => false,
        ))
      ) {
        throw new CliFailure(`${outPath} exists; use --force to overwrite it`);
      }
      await mkdir(config.modelsDir, { recursive: true });
      const bar = progressBar(context.io.stderr, context.io.stderrIsTty);
      const result = await synthesizeModel({
        shape,
        seed: Number(seedText),
        outPath,
        quantization: quant,
        onProgress: (p) => bar.update({ received: p.bytesWritten, total: p.totalBytes, resumedFrom: 0 }),
      });
      bar.done();
      context.io.stdout(
        `wrote ${id} (${result.architecture}, ${result.quantization}, ${formatBytes(result.sizeBytes)}, sha256 ${result.sha256}) to ${result.path}\n`,
      );
    });
}
