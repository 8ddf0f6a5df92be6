/**
 * The vocabulary an MLX checkpoint's prompts are rendered and its text counted with: the
 * vocabulary-only GGUF that @darkbloom/models converts from the checkpoint's tokenizer.json and
 * tokenizer_config.json (its chat template included), which ModelTokenizer opens with node-llama-cpp
 * exactly as the GGUF engines open theirs, and which the coordinator counts with too. So billing,
 * prompt rendering and stop triggers are the same code for every engine.
 *
 * llama.cpp (vocab-only) would abort the process on a malformed GGUF, so the file it opens must be
 * one this process wrote: either in the engine's cache directory (the daemon's data directory, which
 * only it writes), keyed by the checkpoint's identity hash so that a changed checkpoint is converted
 * anew, or, without one, in a private temporary directory removed once the tokenizer is open.
 * The cache keeps the vocabularies used most recently (a few MB each), so checkpoints replaced or
 * removed over a daemon's life do not pile up there.
 */
import { mkdir, mkdtemp, readdir, rename, rm, stat, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ModelTokenizer, TokenizerJsonError, writeVocabularyFromCheckpoint } from "@darkbloom/models";
import type { Llama } from "node-llama-cpp";
import type { ModelFile } from "../engine.js";

/** Vocabularies the cache keeps: the most recently used (opening one counts as a use). */
export const VOCABULARY_CACHE_KEEP = 16;
/** A conversion's partial file this old was left by a process that died while writing it. */
const STALE_PARTIAL_MS = 60 * 60 * 1000;
const VOCABULARY_SUFFIX = ".vocab.gguf";

const exists = (path: string) =>
  stat(path).then(
    (s) => s.isFile(),
    () => false,
  );

/** Thrown when the checkpoint's tokenizer cannot be represented (the message says what). */
export class VocabularyError extends Error {
  override readonly name = "VocabularyError";
}

/**
 * The checkpoint's tokenizer, from the cached vocabulary GGUF (converted first when not cached).
 * Throws VocabularyError when the tokenizer files are missing or describe what llama.cpp cannot
 * reproduce.
 */
export async function openCheckpointTokenizer(
  llama: Llama,
  file: ModelFile,
  cacheDir: string | undefined,
): Promise<ModelTokenizer> {
  if (cacheDir !== undefined) {
    const path = join(cacheDir, `${file.sha256}.vocab.gguf`);
    if (await exists(path)) {
      const now = new Date();
      await utimes(path, now, now); // a use: what pruning keeps
    } else {
      await mkdir(cacheDir, { recursive: true, mode: 0o700 });
      const partial = `${path}.${process.pid}.partial`;
      try {
        await convert(file, partial);
        await rename(partial, path);
      } finally {
        await rm(partial, { force: true });
      }
    }
    // The cache is only an optimization: a file it cannot remove is left for the next pruning.
    await pruneVocabularyCache(cacheDir).catch(() => undefined);
    return ModelTokenizer.open(llama, path);
  }
  const dir = await mkdtemp(join(tmpdir(), "darkbloom-vocabulary-"));
  try {
    const path = join(dir, "vocabulary.gguf");
    await convert(file, path);
    return await ModelTokenizer.open(llama, path);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function convert(file: ModelFile, dest: string): Promise<void> {
  try {
    await writeVocabularyFromCheckpoint(file.path, dest);
  } catch (err) {
    if (err instanceof TokenizerJsonError) throw new VocabularyError(`its tokenizer: ${err.message}`);
    throw err;
  }
}

/**
 * Removes all but the `keep` most recently used vocabularies of the cache, and conversions' partial
 * files left by a process that died (older than an hour). Anything else in the directory is left
 * alone. Returns the names removed.
 */
export async function pruneVocabularyCache(
  cacheDir: string,
  keep = VOCABULARY_CACHE_KEEP,
  nowMs = Date.now(),
): Promise<string[]> {
  const entries: { name: string; mtimeMs: number }[] = [];
  for (const name of await readdir(cacheDir)) {
    if (!name.endsWith(VOCABULARY_SUFFIX) && !name.endsWith(".partial")) continue;
    const info = await stat(join(cacheDir, name)).catch(() => undefined);
    if (info?.isFile()) entries.push({ name, mtimeMs: info.mtimeMs });
  }
  const stale = entries.filter((e) => e.name.endsWith(".partial") && nowMs - e.mtimeMs > STALE_PARTIAL_MS);
  const surplus = entries
    .filter((e) => e.name.endsWith(VOCABULARY_SUFFIX))
    .sort((a, b) => b.mtimeMs - a.mtimeMs || a.name.localeCompare(b.name))
    .slice(keep);
  const removed: string[] = [];
  for (const { name } of [...stale, ...surplus]) {
    await rm(join(cacheDir, name), { force: true });
    removed.push(name);
  }
  return removed;
}
