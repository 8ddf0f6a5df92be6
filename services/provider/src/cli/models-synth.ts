import { mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import {
  isModelShapeName,
  MLX_BITS,
  type MlxBits,
  MODEL_SHAPES,
  type ModelShape,
  type ModelShapeName,
  SYNTH_QUANTIZATIONS,
  type SynthQuantization,
  synthesizeMlxCheckpoint,
  synthesizeModel,
} from "@darkbloom/models";
import type { Command } from "commander";
import { modelPath } from "../config/model-inventory.js";
import type { CliContext } from "./context.js";
import { CliFailure, UsageError } from "./io.js";
import { formatBytes, progressBar } from "./progress.js";
import { addSettingOptions, resolveFromOptions } from "./settings-options.js";

const MODEL_ID = /^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$/;

const exists = (path: string): Promise<boolean> =>
  stat(path).then(
    () => true,
    () => false,
  );

/**
 * `models synth <shape>`: writes a model of a real architecture with seeded random weights: a GGUF
 * file, or with `--format mlx` an MLX checkpoint directory (as mlx-community publishes them).
 */
export function addModelsSynthCommand(models: Command, context: CliContext): void {
  const command = models
    .command("synth")
    .description(`synthesize a model (shapes: ${Object.keys(MODEL_SHAPES).join(", ")})`)
    .argument("<shape>", "model shape");
  addSettingOptions(command, ["dataDir"]);
  command
    .option("--seed <n>", "weights seed (same seed, same file; default 0)")
    .option("--format <format>", "gguf (a file) or mlx (a checkpoint directory); default gguf")
    .option("--quant <type>", `GGUF weight type: ${SYNTH_QUANTIZATIONS.join(", ")} (default Q8_0)`)
    .option("--bits <n>", `MLX quantization bits: ${MLX_BITS.join(" or ")} (default 4)`)
    .option("--name <id>", "model id (default: the shape; for mlx <shape>-mlx-<bits>bit)")
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
      const format = typeof opts.format === "string" ? opts.format.toLowerCase() : "gguf";
      if (format !== "gguf" && format !== "mlx")
        throw new UsageError(`--format must be gguf or mlx (got ${String(opts.format)})`);
      if (format === "mlx") {
        if ((MODEL_SHAPES[shape] as ModelShape).pooling !== undefined)
          throw new UsageError(
            `${shape} is an embedding model: --format mlx writes generative models only (the mlx engine computes no embeddings)`,
          );
        if (opts.quant !== undefined)
          throw new UsageError("--quant is for GGUF models; an MLX checkpoint takes --bits 4 or 8");
        const bitsText = typeof opts.bits === "string" ? opts.bits : "4";
        const bits = Number(bitsText) as MlxBits;
        if (!/^\d$/.test(bitsText) || !MLX_BITS.includes(bits))
          throw new UsageError(`--bits must be ${MLX_BITS.join(" or ")} (got ${bitsText})`);
        await synthMlx(shape, Number(seedText), bits, opts, context);
        return;
      }
      if (opts.bits !== undefined)
        throw new UsageError("--bits is for --format mlx; a GGUF model takes --quant");
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
      if (!opts.force && (await exists(outPath))) {
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

async function synthMlx(
  shape: ModelShapeName,
  seed: number,
  bits: MlxBits,
  opts: Record<string, unknown>,
  context: CliContext,
): Promise<void> {
  const id = typeof opts.name === "string" ? opts.name : `${shape}-mlx-${bits}bit`;
  if (!MODEL_ID.test(id))
    throw new UsageError(`--name must be a model id of [A-Za-z0-9._:-] (got ${JSON.stringify(id)})`);
  const { config } = resolveFromOptions(opts, context);
  const outDir = join(config.modelsDir, id);
  if (await exists(outDir)) {
    if (!opts.force) throw new CliFailure(`${outDir} exists; use --force to overwrite it`);
    await rm(outDir, { recursive: true, force: true });
  }
  await mkdir(config.modelsDir, { recursive: true });
  const bar = progressBar(context.io.stderr, context.io.stderrIsTty);
  const result = await synthesizeMlxCheckpoint({
    shape,
    seed,
    outDir,
    bits,
    onProgress: (p) => bar.update({ received: p.bytesWritten, total: p.totalBytes, resumedFrom: 0 }),
  });
  bar.done();
  context.io.stdout(
    `wrote ${id} (${result.shape.architecture}, MLX ${bits}-bit, group ${result.groupSize}, ${result.files.length} files, ${formatBytes(result.sizeBytes)}) to ${outDir}\n`,
  );
}
