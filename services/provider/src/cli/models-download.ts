import { stat } from "node:fs/promises";
import { readGgufMetadata } from "@darkbloom/models";
import type { Command } from "commander";
import { modelPath } from "../config/model-inventory.js";
import { DownloadError, downloadFile } from "../download/download.js";
import type { CliContext } from "./context.js";
import { CliFailure, UsageError } from "./io.js";
import { formatBytes, progressBar } from "./progress.js";
import { addSettingOptions, resolveFromOptions } from "./settings-options.js";

const MODEL_ID = /^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$/;

/**
 * `models download <url>`: fetches a GGUF model into the models directory, resuming an interrupted
 * download (HTTP Range), checking `--sha256` and that the file is a readable GGUF model, with a
 * progress bar on a terminal.
 */
export function addModelsDownloadCommand(models: Command, context: CliContext): void {
  const command = models
    .command("download")
    .description("download a GGUF model (resumes; checks --sha256)")
    .argument("<url>", "http(s) URL of a .gguf file");
  addSettingOptions(command, ["dataDir"]);
  command
    .option("--sha256 <hex>", "expected SHA-256 of the file")
    .option("--name <id>", "model id (default: the file name without .gguf)")
    .option("--force", "replace an existing model of that id")
    .action(async (url: string, opts: Record<string, unknown>) => {
      let parsed: URL;
      try {
        parsed = new URL(url);
        if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new Error("scheme");
      } catch {
        throw new UsageError(`models download: ${JSON.stringify(url)} is not an http:// or https:// URL`);
      }
      const sha256 = typeof opts.sha256 === "string" ? opts.sha256.toLowerCase() : undefined;
      if (sha256 !== undefined && !/^[0-9a-f]{64}$/.test(sha256)) {
        throw new UsageError(`--sha256 must be 64 hex digits (got ${String(opts.sha256)})`);
      }
      const fileName = decodeURIComponent(parsed.pathname.split("/").pop() ?? "");
      const id = typeof opts.name === "string" ? opts.name : fileName.replace(/\.gguf$/i, "");
      if (!MODEL_ID.test(id)) {
        throw new UsageError(`cannot name the model after ${JSON.stringify(fileName)}; give --name <id>`);
      }
      const { config } = resolveFromOptions(opts, context);
      const dest = modelPath(config.modelsDir, id);
      if (
        !opts.force &&
        (await stat(dest).then(
          () => true,
          () => false,
        ))
      ) {
        throw new CliFailure(`${dest} exists; use --force to replace it`);
      }
      const bar = progressBar(context.io.stderr, context.io.stderrIsTty);
      let result: Awaited<ReturnType<typeof downloadFile>>;
      try {
        result = await downloadFile({
          url,
          dest,
          sha256,
          fetch: context.fetch,
          onProgress: bar.update,
          verify: async (path) => {
            await readGgufMetadata(path);
          },
        });
      } catch (error) {
        bar.done();
        if (error instanceof DownloadError) throw new CliFailure(error.message);
        throw error;
      }
      bar.done();
      const resumed = result.resumedFrom > 0 ? `, resumed at ${formatBytes(result.resumedFrom)}` : "";
      context.io.stdout(
        `downloaded ${id} (${formatBytes(result.sizeBytes)}${resumed}, sha256 ${result.sha256})\n`,
      );
    });
}
