import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { readGgufMetadata, sha256File } from "@darkbloom/models";
import type { ModelFile } from "../engine/engine.js";
import { ConfigError } from "./config.js";

export const MODEL_EXTENSION = ".gguf";
/** Cached SHA-256 of the model files, keyed by file name and invalidated by size and mtime. */
const HASH_CACHE = ".sha256-cache.json";

interface HashCacheEntry {
  size: number;
  mtimeMs: number;
  sha256: string;
}

/** A file in the models directory that is not a usable model. */
export interface ModelProblem {
  file: string;
  error: string;
}

export interface ModelInventory {
  models: ModelFile[];
  problems: ModelProblem[];
}

/** The model id of a file: its name without `.gguf`. */
export function modelIdOf(file: string): string {
  return basename(file).slice(0, -MODEL_EXTENSION.length);
}

export function modelPath(modelsDir: string, id: string): string {
  return join(modelsDir, `${id}${MODEL_EXTENSION}`);
}

/**
 * Describes one GGUF file: id from the file name, architecture, context length and quantization from
 * its metadata (a malformed or truncated file is rejected), size and SHA-256 (cached by size and mtime).
 */
export async function readModelFile(path: string, cache?: Map<string, HashCacheEntry>): Promise<ModelFile> {
  const info = await stat(path);
  const header = await readGgufMetadata(path);
  if (!header.architecture) throw new Error("general.architecture is missing");
  const name = basename(path);
  const cached = cache?.get(name);
  let sha256: string;
  if (cached && cached.size === info.size && cached.mtimeMs === info.mtimeMs) {
    sha256 = cached.sha256;
  } else {
    sha256 = await sha256File(path);
    cache?.set(name, { size: info.size, mtimeMs: info.mtimeMs, sha256 });
  }
  return {
    id: modelIdOf(path),
    path,
    sizeBytes: info.size,
    quantization: header.quantization,
    sha256,
    architecture: header.architecture,
    contextLength: header.contextLength,
  };
}

/** Every `*.gguf` in the models directory, sorted by id; unreadable ones are listed as problems. */
export async function scanModels(modelsDir: string): Promise<ModelInventory> {
  let names: string[];
  try {
    names = await readdir(modelsDir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { models: [], problems: [] };
    throw error;
  }
  const cache = await readHashCache(modelsDir);
  const before = JSON.stringify([...cache]);
  const models: ModelFile[] = [];
  const problems: ModelProblem[] = [];
  for (const name of names.filter((n) => n.endsWith(MODEL_EXTENSION) && !n.startsWith(".")).sort()) {
    try {
      models.push(await readModelFile(join(modelsDir, name), cache));
    } catch (error) {
      problems.push({ file: name, error: error instanceof Error ? error.message : String(error) });
    }
  }
  const present = new Set(names);
  for (const key of [...cache.keys()]) if (!present.has(key)) cache.delete(key);
  if (JSON.stringify([...cache]) !== before) await writeHashCache(modelsDir, cache);
  return { models, problems };
}

/**
 * The models the daemon serves: the ids configured (each must be a valid model file), or every model
 * in the directory when none is configured. Throws ConfigError naming what is missing.
 */
export async function selectModels(modelsDir: string, ids: readonly string[]): Promise<ModelFile[]> {
  const { models, problems } = await scanModels(modelsDir);
  if (ids.length === 0) {
    if (models.length === 0) {
      const extra =
        problems.length > 0
          ? ` (${problems.length} unreadable: ${problems[0]?.file}: ${problems[0]?.error})`
          : "";
      throw new ConfigError(
        `no models in ${modelsDir}${extra}; run \`darkbloom models synth tiny\` or \`darkbloom models download <url>\``,
      );
    }
    return models;
  }
  const byId = new Map(models.map((m) => [m.id, m]));
  return ids.map((id) => {
    const model = byId.get(id);
    if (model) return model;
    const problem = problems.find((p) => modelIdOf(p.file) === id);
    if (problem) throw new ConfigError(`model ${id} in ${modelsDir} is not usable: ${problem.error}`);
    throw new ConfigError(
      `model ${id} is not in ${modelsDir} (available: ${models.map((m) => m.id).join(", ") || "none"})`,
    );
  });
}

/** Deletes a model file; false when there was none. */
export async function removeModel(modelsDir: string, id: string): Promise<boolean> {
  const path = modelPath(modelsDir, id);
  try {
    await stat(path);
  } catch {
    return false;
  }
  await rm(path);
  await rm(`${path}.partial`, { force: true });
  return true;
}

async function readHashCache(modelsDir: string): Promise<Map<string, HashCacheEntry>> {
  try {
    const parsed = JSON.parse(await readFile(join(modelsDir, HASH_CACHE), "utf8")) as Record<
      string,
      HashCacheEntry
    >;
    const map = new Map<string, HashCacheEntry>();
    for (const [name, e] of Object.entries(parsed)) {
      if (typeof e?.sha256 === "string" && /^[0-9a-f]{64}$/.test(e.sha256) && typeof e.size === "number") {
        map.set(name, e);
      }
    }
    return map;
  } catch {
    return new Map();
  }
}

async function writeHashCache(modelsDir: string, cache: Map<string, HashCacheEntry>): Promise<void> {
  try {
    await mkdir(modelsDir, { recursive: true });
    const tmp = join(modelsDir, `${HASH_CACHE}.${process.pid}.tmp`);
    await writeFile(tmp, `${JSON.stringify(Object.fromEntries(cache), null, 2)}\n`);
    await rename(tmp, join(modelsDir, HASH_CACHE));
  } catch {
    // A cache that cannot be written only costs a re-hash next time.
  }
}
