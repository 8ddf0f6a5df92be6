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
 */
import { mkdir, mkdtemp, rename, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ModelTokenizer, TokenizerJsonError, writeVocabularyFromCheckpoint } from "@darkbloom/models";
import type { Llama } from "node-llama-cpp";
import type { ModelFile } from "../engine.js";

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
    if (!(await exists(path))) {
      await mkdir(cacheDir, { recursive: true, mode: 0o700 });
      const partial = `${path}.${process.pid}.partial`;
      try {
        await convert(file, partial);
        await rename(partial, path);
      } finally {
        await rm(partial, { force: true });
      }
    }
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
