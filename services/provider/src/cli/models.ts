import { commandGroup } from "@darkbloom/cli-kit";
import type { Command } from "commander";
import { modelIdOf, removeModel, scanModels } from "../config/model-inventory.js";
import type { CliContext } from "./context.js";
import { CliFailure, UsageError } from "./io.js";
import { addModelsDownloadCommand } from "./models-download.js";
import { addModelsSynthCommand } from "./models-synth.js";
import { formatBytes } from "./progress.js";
import { addSettingOptions, resolveFromOptions } from "./settings-options.js";

/** `models list|remove|synth|download`: the GGUF files and MLX checkpoint directories in `<data dir>/models`. */
export function addModelsCommands(program: Command, context: CliContext): void {
  const models = commandGroup(program, "models", "manage the models in the data directory");
  addModelsListCommand(models, context);
  addModelsRemoveCommand(models, context);
  addModelsSynthCommand(models, context);
  addModelsDownloadCommand(models, context);
}

function addModelsListCommand(models: Command, context: CliContext): void {
  const command = models
    .command("list")
    .description("list the models (id, format, size, quantization, SHA-256)");
  addSettingOptions(command, ["dataDir"]);
  command.option("--json", "print JSON").action(async (opts: Record<string, unknown>) => {
    const { config } = resolveFromOptions(opts, context);
    const { models: found, problems } = await scanModels(config.modelsDir);
    if (opts.json) {
      context.io.stdout(
        `${JSON.stringify({ modelsDir: config.modelsDir, models: found, problems }, null, 2)}\n`,
      );
      return;
    }
    if (found.length === 0) context.io.stdout(`no models in ${config.modelsDir}\n`);
    else {
      const rows = [
        ["ID", "FORMAT", "SIZE", "QUANT", "ARCH", "CONTEXT", "SHA256"],
        ...found.map((m) => [
          m.id,
          m.format ?? "gguf",
          formatBytes(m.sizeBytes),
          m.quantization,
          m.architecture,
          String(m.contextLength),
          m.sha256.slice(0, 16),
        ]),
      ];
      const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => r[i]?.length ?? 0))) ?? [];
      for (const row of rows) {
        context.io.stdout(
          `${row
            .map((cell, i) => cell.padEnd(widths[i] ?? 0))
            .join("  ")
            .trimEnd()}\n`,
        );
      }
    }
    for (const p of problems) context.io.stderr(`darkbloom: ${p.file} is not a usable model: ${p.error}\n`);
  });
}

function addModelsRemoveCommand(models: Command, context: CliContext): void {
  const command = models
    .command("remove")
    .description("delete a model file or checkpoint directory")
    .argument("<id>", "model id");
  addSettingOptions(command, ["dataDir"]);
  command.action(async (id: string, opts: Record<string, unknown>) => {
    if (modelIdOf(`${id}.gguf`) !== id || id.includes("/") || id.startsWith(".")) {
      throw new UsageError(`models remove: ${JSON.stringify(id)} is not a model id`);
    }
    const { config } = resolveFromOptions(opts, context);
    if (!(await removeModel(config.modelsDir, id)))
      throw new CliFailure(`no model ${id} in ${config.modelsDir}`);
    context.io.stdout(`removed ${id}\n`);
  });
}
