/**
 * The models in the models directory: GGUF files (`<id>.gguf`) and MLX checkpoint directories
 * (`<id>/`, checkpoint-inventory.ts), each a ModelFile whose `format` says which.
 */
import type { Dirent } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { type GgufMetadata, readGgufMetadata, sha256File } from "@darkbloom/models";
import { type EmbeddingModel, embeddingModelOf } from "@darkbloom/models/embeddings";
import type { ModelFile, ModelFormat } from "../engine/engine.js";
import {
  type HashCache,
  type HashCacheEntry,
  isCheckpointDir,
  readCheckpoint,
} from "./checkpoint-inventory.js";
import { ConfigError } from "./config.js";

export const MODEL_EXTENSION = ".gguf";
/**
 * Cached SHA-256 of the model files, invalidated by size and mtime: keyed by file name for a GGUF,
 * `<id>/<path>` for a checkpoint's files.
 */
const HASH_CACHE = ".sha256-cache.json";

/** A file (or checkpoint directory) in the models directory that is not a usable model. */
export interface ModelProblem {
  file: string;
  /** The model id it would have. */
  id: string;
  format: ModelFormat;
  error: string;
}

export interface ModelInventory {
  models: ModelFile[];
  problems: ModelProblem[];
}

/** The model id of a file: its name without `.gguf` (a checkpoint directory's: its name). */
export function modelIdOf(file: string): string {
  const name = basename(file);
  return name.endsWith(MODEL_EXTENSION) ? name.slice(0, -MODEL_EXTENSION.length) : name;
}

export function modelPath(modelsDir: string, id: string): string {
  return join(modelsDir, `${id}${MODEL_EXTENSION}`);
}

/**
 * The embedding model a GGUF header declares (embeddingModelOf over `<arch>.pooling_type` and
 * `<arch>.embedding_length`), or undefined for a generative model.
 */
export function ggufEmbeddingModel(header: GgufMetadata): EmbeddingModel | undefined {
  const scalar = (key: string): number | undefined => {
    const e = header.kv.find((x) => x.key === key);
    return e === undefined || e.type === "array" || typeof e.value === "string" ? undefined : Number(e.value);
  };
  const arch = header.architecture;
  return embeddingModelOf({
    architectureMetadata: {
      pooling_type: scalar(`${arch}.pooling_type`),
      embedding_length: scalar(`${arch}.embedding_length`),
    },
  });
}

/**
 * Describes one GGUF file: id from the file name, architecture, context length, quantization and
 * whether it is an embedding model from its metadata (a malformed or truncated file is rejected),
 * size and SHA-256 (cached by size and mtime).
 */
export async function readModelFile(path: string, cache?: HashCache): Promise<ModelFile> {
  const info = await stat(path);
  const header = await readGgufMetadata(path);
  if (!header.architecture) throw new Error("general.architecture is missing");
  const name = basename(path);
  const cached = cache?.entries.get(name);
  let sha256: string;
  if (cached && cached.size === info.size && cached.mtimeMs === info.mtimeMs) {
    sha256 = cached.sha256;
  } else {
    sha256 = await sha256File(path);
    cache?.entries.set(name, { size: info.size, mtimeMs: info.mtimeMs, sha256 });
  }
  cache?.used.add(name);
  const embedding = ggufEmbeddingModel(header);
  return {
    id: modelIdOf(path),
    path,
    format: "gguf",
    sizeBytes: info.size,
    quantization: header.quantization,
    sha256,
    architecture: header.architecture,
    contextLength: header.contextLength,
    ...(embedding ? { embedding } : {}),
  };
}

/**
 * The entries of the models directory that hold models, by name: `*.gguf` files and checkpoint
 * directories (config.json, *.safetensors, or a download's manifest or marker), skipping hidden
 * names and what is still being written (`*.partial`).
 */
async function modelEntries(modelsDir: string): Promise<{ name: string; format: ModelFormat }[] | undefined> {
  let entries: Dirent[];
  try {
    entries = await readdir(modelsDir, { withFileTypes: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  const out: { name: string; format: ModelFormat }[] = [];
  const byId = (e: Dirent) => modelIdOf(e.name);
  for (const e of entries.sort((a, b) => (byId(a) < byId(b) ? -1 : byId(a) > byId(b) ? 1 : 0))) {
    if (e.name.startsWith(".") || e.name.endsWith(".partial")) continue;
    if (e.name.endsWith(MODEL_EXTENSION) && !e.isDirectory()) out.push({ name: e.name, format: "gguf" });
    else if (e.isDirectory() && (await isCheckpointDir(join(modelsDir, e.name))))
      out.push({ name: e.name, format: "mlx" });
  }
  return out;
}

/** Every model in the models directory, sorted by id; unreadable ones are listed as problems. */
export async function scanModels(modelsDir: string): Promise<ModelInventory> {
  const entries = await modelEntries(modelsDir);
  if (!entries) return { models: [], problems: [] };
  const entriesCache = await readHashCache(modelsDir);
  const before = JSON.stringify([...entriesCache]);
  const cache: HashCache = { entries: entriesCache, used: new Set() };
  const models: ModelFile[] = [];
  const problems: ModelProblem[] = [];
  for (const { name, format } of entries) {
    const path = join(modelsDir, name);
    try {
      models.push(
        format === "gguf" ? await readModelFile(path, cache) : await readCheckpoint(path, name, cache),
      );
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      problems.push({ file: name, id: modelIdOf(name), format, error: message });
    }
  }
  // `<id>.gguf` and a checkpoint directory `<id>/` would be one id: the file keeps it.
  const ggufIds = new Set(models.filter((m) => m.format === "gguf").map((m) => m.id));
  for (const m of models.filter((m) => m.format === "mlx" && ggufIds.has(m.id))) {
    models.splice(models.indexOf(m), 1);
    problems.push({
      file: m.id,
      id: m.id,
      format: "mlx",
      error: `its id is taken by ${m.id}${MODEL_EXTENSION}: rename the directory`,
    });
  }
  // Hashes of files no longer there (or no longer read) are dropped.
  for (const key of [...entriesCache.keys()]) if (!cache.used.has(key)) entriesCache.delete(key);
  if (JSON.stringify([...entriesCache]) !== before) await writeHashCache(modelsDir, entriesCache);
  return { models, problems };
}

/**
 * The formats of the models `ids` names (every model when empty), from their names alone (nothing is
 * read or hashed): what the engine choice depends on. Ids not found are left out.
 */
export async function modelFormats(modelsDir: string, ids: readonly string[]): Promise<Set<ModelFormat>> {
  const entries = (await modelEntries(modelsDir).catch(() => undefined)) ?? [];
  const wanted = new Set(ids);
  return new Set(
    entries.filter((e) => wanted.size === 0 || wanted.has(modelIdOf(e.name))).map((e) => e.format),
  );
}

/**
 * Whether a GGUF file among the models `ids` names (every model when empty) is an embedding model,
 * from their headers (nothing is hashed; an unreadable file counts as none): what `engine: auto`
 * adds an engine that embeds for.
 */
export async function servesEmbeddingModels(modelsDir: string, ids: readonly string[]): Promise<boolean> {
  const entries = (await modelEntries(modelsDir).catch(() => undefined)) ?? [];
  const wanted = new Set(ids);
  for (const e of entries) {
    if (e.format !== "gguf" || (wanted.size > 0 && !wanted.has(modelIdOf(e.name)))) continue;
    const header = await readGgufMetadata(join(modelsDir, e.name)).catch(() => undefined);
    if (header && ggufEmbeddingModel(header)) return true;
  }
  return false;
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
    const problem = problems.find((p) => p.id === id);
    if (problem) throw new ConfigError(`model ${id} in ${modelsDir} is not usable: ${problem.error}`);
    throw new ConfigError(
      `model ${id} is not in ${modelsDir} (available: ${models.map((m) => m.id).join(", ") || "none"})`,
    );
  });
}

/** Deletes a model file or checkpoint directory; false when there was none. */
export async function removeModel(modelsDir: string, id: string): Promise<boolean> {
  const path = modelPath(modelsDir, id);
  const dir = join(modelsDir, id);
  if (
    await stat(path).then(
      () => true,
      () => false,
    )
  ) {
    await rm(path);
    await rm(`${path}.partial`, { force: true });
    return true;
  }
  if (!(await isCheckpointDir(dir))) return false;
  await rm(dir, { recursive: true, force: true });
  await rm(`${dir}.partial`, { recursive: true, force: true });
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
