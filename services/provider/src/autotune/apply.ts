/**
 * `--apply`: writes the recipe into the YAML config file without ever leaving a half-written one.
 * The new text goes to a temporary file beside the config, is fsynced and checked with the same
 * parser `serve` uses; the current file is copied to `<name>.bak-<UTC timestamp>[-n]` (created
 * exclusively: an existing backup is never overwritten); then the temporary file is renamed over the
 * config (atomic within a directory) and the directory fsynced. A crash at any point leaves either
 * the old config or the new one. Comments and other keys of the file are kept.
 */
import { constants } from "node:fs";
import { copyFile, mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { Document, isMap, isScalar, parseDocument } from "yaml";
import { ConfigError, resolveConfig } from "../config/config.js";
import { type DefaultsContext, SETTINGS } from "../config/settings.js";
import type { Knobs } from "./knobs.js";

/** The config could not be written; the old one is intact. */
export class ApplyError extends Error {
  override readonly name = "ApplyError";
}

export interface ApplyOptions {
  /** The backup's timestamp (default now). */
  now?: Date;
  /** The rename step, replaceable so a test can make it fail. */
  rename?: (from: string, to: string) => Promise<void>;
  /** Called with the temporary file's path once it is written and fsynced (tests: crash here). */
  afterTempWritten?: (tempPath: string) => Promise<void>;
  /** For checking the new file as `serve` would read it (home for `~`). */
  defaults?: Partial<DefaultsContext>;
}

export interface ApplyResult {
  configPath: string;
  /** The copy of the previous file; undefined when there was none. */
  backupPath: string | undefined;
}

/** The YAML text of `current` (or a new file) with the recipe's model and knobs set. */
export function recipeYaml(current: string | undefined, model: string, knobs: Knobs): string {
  const parsed = parseDocument(current ?? "", { uniqueKeys: true });
  if (parsed.errors.length > 0)
    throw new ApplyError(`the config file is not valid YAML: ${parsed.errors[0]?.message.split("\n")[0]}`);
  const empty = parsed.contents === null || (isScalar(parsed.contents) && parsed.contents.value === null);
  if (!empty && !isMap(parsed.contents)) throw new ApplyError("the config file is not a mapping of settings");
  // An empty file has no mapping to keep comments in: start one.
  const doc: Document = empty ? new Document({}) : parsed;
  doc.set(SETTINGS.models.yaml, [model]);
  if (knobs.kvBits === undefined) doc.delete(SETTINGS.kvBits.yaml);
  else doc.set(SETTINGS.kvBits.yaml, knobs.kvBits);
  doc.set(SETTINGS.maxBatch.yaml, knobs.maxBatch);
  doc.set(SETTINGS.maxContext.yaml, knobs.maxContext);
  doc.set(SETTINGS.threads.yaml, knobs.threads);
  return doc.toString();
}

/** `provider.yaml.bak-20260518T101112Z`, from a date. */
export function backupStamp(now: Date): string {
  return now
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}Z$/, "Z");
}

export async function applyRecipe(
  configPath: string,
  model: string,
  knobs: Knobs,
  options: ApplyOptions = {},
): Promise<ApplyResult> {
  const dir = dirname(configPath);
  await mkdir(dir, { recursive: true });
  const current = await readFile(configPath, "utf8").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw new ApplyError(`${configPath} cannot be read (${error.code ?? error.message})`);
  });
  const text = recipeYaml(current, model, knobs);
  const temp = join(dir, `.${basename(configPath)}.autotune-${process.pid}-${Date.now()}.tmp`);
  let renamed = false;
  try {
    await writeSynced(temp, text);
    await options.afterTempWritten?.(temp);
    try {
      resolveConfig({ configPath: temp, env: {}, flags: {}, cwd: dir, defaults: options.defaults });
    } catch (error) {
      if (error instanceof ConfigError)
        throw new ApplyError(`the new config would not load: ${error.message}`);
      throw error;
    }
    const backupPath =
      current === undefined ? undefined : await backup(configPath, options.now ?? new Date());
    try {
      await (options.rename ?? rename)(temp, configPath);
    } catch (error) {
      throw new ApplyError(
        `${configPath} was not replaced (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); it is unchanged`,
      );
    }
    renamed = true;
    await syncDirectory(dir);
    return { configPath, backupPath };
  } finally {
    if (!renamed) await unlink(temp).catch(() => {});
  }
}

async function writeSynced(path: string, text: string): Promise<void> {
  const handle = await open(path, "wx", 0o600);
  try {
    await handle.writeFile(text, "utf8");
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Copies the config to the first free `<name>.bak-<stamp>[-n]`, exclusively, and fsyncs it. */
async function backup(configPath: string, now: Date): Promise<string> {
  const base = `${configPath}.bak-${backupStamp(now)}`;
  for (let n = 0; n < 1000; n++) {
    const path = n === 0 ? base : `${base}-${n}`;
    try {
      await copyFile(configPath, path, constants.COPYFILE_EXCL);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST") continue;
      throw new ApplyError(`the backup ${path} cannot be written (${(error as NodeJS.ErrnoException).code})`);
    }
    const handle = await open(path, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    return path;
  }
  throw new ApplyError(`no free backup name for ${base}`);
}

async function syncDirectory(dir: string): Promise<void> {
  // Not every platform lets a directory be opened for fsync; the rename is atomic either way.
  const handle = await open(dir, "r").catch(() => undefined);
  await handle?.sync().catch(() => {});
  await handle?.close();
}
