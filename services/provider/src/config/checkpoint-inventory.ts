/**
 * MLX checkpoints in the models directory: a directory `<models>/<id>/` holding config.json, the
 * tokenizer's files and *.safetensors (what `models synth --format mlx` writes and `models download
 * owner/name` fetches, the latter with its manifest written last). Its model id is the directory's
 * name; its identity (ModelFile.sha256, Register's weight hash, what challenges are checked against)
 * is one SHA-256 over its files, defined as the daemon's binary hash is over `dist/` (trust/
 * binary-hash.ts): one line `<hex SHA-256 of the file>  <path relative to the directory, "/"-separated>\n`
 * per file, sorted by the path's UTF-8 bytes, hashed together. Darkbloom's own files are not the
 * checkpoint's and are left out: the download manifest, the download marker, and `*.partial` files.
 * So the same files synthesized or downloaded have the same identity, and any changed, added or
 * removed file changes it.
 */
import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { sha256File } from "@darkbloom/models";
import { readMlxCheckpoint } from "@darkbloom/native/mlx";
import { CHECKPOINT_MANIFEST, DOWNLOAD_MARKER } from "../download/repository.js";
import type { ModelFile } from "../engine/engine.js";

/** A cached file hash, invalidated by size and mtime (model-inventory.ts keeps them). */
export interface HashCacheEntry {
  size: number;
  mtimeMs: number;
  sha256: string;
}

/** The hash cache, keyed `<id>/<path>` for a checkpoint's files; `used` collects the keys read. */
export interface HashCache {
  entries: Map<string, HashCacheEntry>;
  used: Set<string>;
}

interface CheckpointEntry {
  /** Relative, "/"-separated. */
  path: string;
  size: number;
  mtimeMs: number;
}

const ownFile = (path: string) =>
  path === CHECKPOINT_MANIFEST || path === DOWNLOAD_MARKER || path.endsWith(".partial");

/** Whether a directory of the models directory looks like a checkpoint (whole or not). */
export async function isCheckpointDir(dir: string): Promise<boolean> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names.some(
    (n) =>
      n === "config.json" || n === CHECKPOINT_MANIFEST || n === DOWNLOAD_MARKER || n.endsWith(".safetensors"),
  );
}

/**
 * The checkpoint's own files, recursively: regular files, and symbolic links to files (as a hub
 * cache lays checkpoints out), hashed by what they point at; links to directories are not followed
 * (a cycle would never end).
 */
async function checkpointEntries(root: string, prefix = ""): Promise<CheckpointEntry[]> {
  const out: CheckpointEntry[] = [];
  for (const entry of await readdir(join(root, prefix), { withFileTypes: true })) {
    const rel = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    if (ownFile(rel)) continue;
    const info = entry.isSymbolicLink() ? await stat(join(root, rel)).catch(() => undefined) : undefined;
    if (entry.isDirectory()) out.push(...(await checkpointEntries(root, rel)));
    else if (entry.isFile() || info?.isFile()) {
      const s = info ?? (await stat(join(root, rel)));
      out.push({ path: rel, size: s.size, mtimeMs: s.mtimeMs });
    }
  }
  return out;
}

/** The identity hash of the checkpoint in `dir` (see above); file hashes come from `cache` when fresh. */
export async function checkpointSha256(dir: string, cache?: HashCache, id = ""): Promise<string> {
  const lines: { path: Buffer; line: string }[] = [];
  for (const e of await checkpointEntries(dir)) {
    const key = `${id}/${e.path}`;
    const cached = cache?.entries.get(key);
    let sha256: string;
    if (cached && cached.size === e.size && cached.mtimeMs === e.mtimeMs) sha256 = cached.sha256;
    else {
      sha256 = await sha256File(join(dir, ...e.path.split("/")));
      cache?.entries.set(key, { size: e.size, mtimeMs: e.mtimeMs, sha256 });
    }
    cache?.used.add(key);
    lines.push({ path: Buffer.from(e.path), line: `${sha256}  ${e.path}\n` });
  }
  lines.sort((a, b) => Buffer.compare(a.path, b.path));
  const hash = createHash("sha256");
  for (const { line } of lines) hash.update(line);
  return hash.digest("hex");
}

/** "MLX_4BIT" / "MLX_8BIT" for a quantized checkpoint, else its float type ("BF16"), else "MLX". */
function quantizationOf(config: Record<string, unknown>): string {
  const q = (config.quantization ?? config.quantization_config) as { bits?: unknown } | undefined;
  if (typeof q?.bits === "number") return `MLX_${q.bits}BIT`;
  const dtype = config.torch_dtype;
  const floats: Record<string, string> = { bfloat16: "BF16", float16: "F16", float32: "F32" };
  return typeof dtype === "string" && floats[dtype] ? floats[dtype] : "MLX";
}

/**
 * Describes the checkpoint in `dir` (whose name is its id): refused while a download into it is under
 * way or was interrupted, when a file its manifest lists is missing or of another size, when
 * config.json is not a Qwen3 or Llama one the mlx engine loads, or without tokenizer.json.
 */
export async function readCheckpoint(dir: string, id: string, cache?: HashCache): Promise<ModelFile> {
  const names = await readdir(dir);
  if (names.includes(DOWNLOAD_MARKER))
    throw new Error("its download is incomplete: run `darkbloom models download` again to resume it");
  if (names.includes(CHECKPOINT_MANIFEST)) {
    const manifest = JSON.parse(await readFile(join(dir, CHECKPOINT_MANIFEST), "utf8")) as {
      files?: { path: string; size: number }[];
    };
    for (const f of manifest.files ?? []) {
      const size = await stat(join(dir, ...f.path.split("/"))).then(
        (s) => s.size,
        () => -1,
      );
      if (size !== f.size)
        throw new Error(`${f.path} is ${size < 0 ? "missing" : "changed"} since it was downloaded`);
    }
  }
  const config = await readMlxCheckpoint(dir).catch((err: unknown) => {
    // readMlxCheckpoint names the directory; the inventory names it already.
    throw new Error((err as Error).message.replace(`${dir}: `, ""));
  });
  if (!names.includes("tokenizer.json")) throw new Error("no tokenizer.json");
  const raw = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  const entries = await checkpointEntries(dir);
  return {
    id,
    path: dir,
    format: "mlx",
    sizeBytes: entries.reduce((sum, e) => sum + e.size, 0),
    quantization: quantizationOf(raw),
    sha256: await checkpointSha256(dir, cache, id),
    architecture: config.architecture,
    contextLength: config.maxPositionEmbeddings,
  };
}
