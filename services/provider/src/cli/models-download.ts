import { mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { readGgufMetadata } from "@darkbloom/models";
import type { Command } from "commander";
import { modelPath } from "../config/model-inventory.js";
import { DownloadError, downloadFile } from "../download/download.js";
import {
  CHECKPOINT_MANIFEST,
  DEFAULT_HUB,
  downloadRepository,
  isRepositoryId,
  planRepository,
} from "../download/repository.js";
import type { CliContext } from "./context.js";
import { CliFailure, UsageError } from "./io.js";
import { formatBytes, progressBar } from "./progress.js";
import { addSettingOptions, resolveFromOptions } from "./settings-options.js";

const MODEL_ID = /^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$/;

/**
 * `models download <url|owner/name>`: fetches a GGUF model into the models directory, resuming an
 * interrupted download (HTTP Range), checking `--sha256` and that the file is a readable GGUF model;
 * or every file of a hub repository (a multi-file checkpoint such as mlx-community/Qwen3-0.6B-4bit)
 * into `<models>/<name>/`, each file resumed and checked against the hub's hash. One progress bar on a
 * terminal either way.
 */
export function addModelsDownloadCommand(models: Command, context: CliContext): void {
  const command = models
    .command("download")
    .description("download a GGUF model, or every file of a hub repository (resumes; checks hashes)")
    .argument("<url|owner/name>", "http(s) URL of a .gguf file, or a repository on the hub (HF_ENDPOINT)");
  addSettingOptions(command, ["dataDir"]);
  command
    .option("--sha256 <hex>", "expected SHA-256 of the file (a URL)")
    .option("--revision <rev>", "branch, tag or commit of the repository (default main)")
    .option("--name <id>", "model id (default: the file name without .gguf, or the repository's name)")
    .option("--force", "replace an existing model of that id")
    .action(async (url: string, opts: Record<string, unknown>) => {
      // A URL has a scheme, which a repository id ("owner/name", no ":") cannot have.
      if (isRepositoryId(url)) {
        await downloadCheckpoint(url, opts, context);
        return;
      }
      if (opts.revision !== undefined) {
        throw new UsageError("--revision is for a repository (owner/name), not a URL");
      }
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

/** `models download owner/name`: a whole repository into `<models>/<id>/`. */
async function downloadCheckpoint(
  repo: string,
  opts: Record<string, unknown>,
  context: CliContext,
): Promise<void> {
  if (opts.sha256 !== undefined) {
    throw new UsageError(
      "--sha256 is for a single file; a repository's files are checked against the hub's hashes",
    );
  }
  const revision = typeof opts.revision === "string" ? opts.revision : "main";
  if (!/^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$/.test(revision) || revision.includes("..")) {
    throw new UsageError(`--revision must be a branch, tag or commit (got ${JSON.stringify(revision)})`);
  }
  const id = typeof opts.name === "string" ? opts.name : (repo.split("/")[1] ?? "");
  if (!MODEL_ID.test(id))
    throw new UsageError(`cannot name the model ${JSON.stringify(id)}; give --name <id>`);
  const { config } = resolveFromOptions(opts, context);
  const dir = join(config.modelsDir, id);
  const complete = await stat(join(dir, CHECKPOINT_MANIFEST)).then(
    () => true,
    () => false,
  );
  if (complete && !opts.force) throw new CliFailure(`${dir} holds ${id} already; use --force to replace it`);
  if (opts.force) await rm(dir, { recursive: true, force: true });
  const endpoint = context.io.env.HF_ENDPOINT || DEFAULT_HUB;
  // As huggingface_hub reads it (HUGGING_FACE_HUB_TOKEN is its older name); never logged.
  const token = context.io.env.HF_TOKEN || context.io.env.HUGGING_FACE_HUB_TOKEN || undefined;
  const bar = progressBar(context.io.stderr, context.io.stderrIsTty);
  let result: Awaited<ReturnType<typeof downloadRepository>>;
  let commit: string;
  try {
    const plan = await planRepository({ repo, revision, endpoint, fetch: context.fetch, token });
    commit = plan.commit;
    await mkdir(dir, { recursive: true });
    result = await downloadRepository({
      plan,
      dir,
      endpoint,
      fetch: context.fetch,
      onProgress: bar.update,
      token,
    });
  } catch (error) {
    bar.done();
    if (error instanceof DownloadError) throw new CliFailure(error.message);
    throw error;
  }
  bar.done();
  const resumed = result.resumedBytes > 0 ? `, ${formatBytes(result.resumedBytes)} already there` : "";
  context.io.stdout(
    `downloaded ${repo} at ${commit.slice(0, 12)} into ${dir} (${result.files} files, ${formatBytes(result.sizeBytes)}${resumed})\n`,
  );
}
