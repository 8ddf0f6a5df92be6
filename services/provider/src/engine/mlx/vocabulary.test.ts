/**
 * The vocabulary cache of MLX checkpoints: converted once per checkpoint identity, reused, and kept
 * to the most recently used. Needs no MLX: the checkpoint is synthesized and its tokenizer opened with
 * node-llama-cpp, as the engine does.
 */
import { mkdtemp, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { synthesizeMlxCheckpoint } from "@darkbloom/models";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readCheckpoint } from "../../config/checkpoint-inventory.js";
import type { ModelFile } from "../engine.js";
import { openCheckpointTokenizer, pruneVocabularyCache, VOCABULARY_CACHE_KEEP } from "./vocabulary.js";

const HOUR = 60 * 60 * 1000;

async function touch(path: string, atMs: number, content = "x"): Promise<void> {
  await writeFile(path, content);
  await utimes(path, new Date(atMs), new Date(atMs));
}

describe("vocabulary cache", () => {
  let dir: string;
  let llama: Llama;
  let checkpoint: ModelFile;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "darkbloom-vocabulary-"));
    llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
    const path = join(dir, "tiny-mlx-4bit");
    await synthesizeMlxCheckpoint({ shape: "tiny", seed: 1, bits: 4, outDir: path });
    checkpoint = await readCheckpoint(path, "tiny-mlx-4bit");
  });
  afterAll(async () => {
    await llama?.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps the most recently used vocabularies and drops stale partial files, nothing else", async () => {
    const cache = await mkdtemp(join(dir, "prune-"));
    const now = Date.now();
    for (let i = 0; i < 5; i++) await touch(join(cache, `v${i}.vocab.gguf`), now - (5 - i) * 1000);
    await touch(join(cache, "fresh.vocab.gguf.123.partial"), now - 1000); // a conversion under way
    await touch(join(cache, "dead.vocab.gguf.456.partial"), now - 2 * HOUR);
    await touch(join(cache, "notes.txt"), now - 10 * HOUR);

    const removed = await pruneVocabularyCache(cache, 3, now);
    expect(removed.sort()).toEqual(["dead.vocab.gguf.456.partial", "v0.vocab.gguf", "v1.vocab.gguf"]);
    expect((await readdir(cache)).sort()).toEqual([
      "fresh.vocab.gguf.123.partial",
      "notes.txt",
      "v2.vocab.gguf",
      "v3.vocab.gguf",
      "v4.vocab.gguf",
    ]);
  });

  it("converts a checkpoint's vocabulary once, marks each use, and prunes the least recently used", async () => {
    const cache = await mkdtemp(join(dir, "cache-"));
    const ours = join(cache, `${checkpoint.sha256}.vocab.gguf`);

    const first = await openCheckpointTokenizer(llama, checkpoint, cache);
    const written = await stat(ours);
    expect(first.countText("hello world")).toBeGreaterThan(0);
    await first.dispose();

    // Others' vocabularies, all used more recently than ours, fill the cache beyond what it keeps.
    const old = Date.now() - HOUR;
    await utimes(ours, new Date(old - 1000), new Date(old - 1000));
    for (let i = 0; i < VOCABULARY_CACHE_KEEP; i++) await touch(join(cache, `other${i}.vocab.gguf`), old + i);

    const again = await openCheckpointTokenizer(llama, checkpoint, cache);
    await again.dispose();
    const reused = await stat(ours);
    expect(reused.ino).toBe(written.ino); // not converted again
    expect(reused.mtimeMs).toBeGreaterThan(old); // opening it was a use
    const left = await readdir(cache);
    expect(left).toHaveLength(VOCABULARY_CACHE_KEEP);
    expect(left).toContain(`${checkpoint.sha256}.vocab.gguf`);
    expect(left).not.toContain("other0.vocab.gguf"); // the least recently used went
  });
});
