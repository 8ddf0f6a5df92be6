import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { synthesizeModel } from "../synth/synthesize.js";
import { ModelTokenizer } from "./model-tokenizer.js";
import { TokenizerPool } from "./tokenizer-pool.js";
import { writeVocabularyFile } from "./vocabulary-file.js";

// The pool runs the built package in its workers (they cannot run these TypeScript sources): the
// suite's `tsc -b` builds it first.

let dir: string;
let llama: Llama;
let vocabulary: string;
let local: ModelTokenizer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-pool-"));
  await synthesizeModel({ shape: "tiny", seed: 8, outPath: join(dir, "tiny.gguf") });
  vocabulary = join(dir, "tiny.vocab.gguf");
  await writeVocabularyFile(join(dir, "tiny.gguf"), vocabulary);
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
  local = await ModelTokenizer.open(llama, vocabulary);
}, 60_000);

afterAll(async () => {
  await local?.dispose();
  await llama?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("TokenizerPool", () => {
  it("counts in worker threads exactly as on this thread, and keeps serving after a bad file", async () => {
    const pool = new TokenizerPool({ threads: 2 });
    try {
      const texts = ["Hello, wörld 🙂", "", "x".repeat(300)];
      const input = { kind: "chat" as const, messages: [{ role: "user" as const, content: "Écris 🙂" }] };
      const counts = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          i % 2 === 0 ? pool.countTexts(vocabulary, texts) : pool.countPrompt(vocabulary, input),
        ),
      );
      const expected = texts.reduce((sum, t) => sum + local.countText(t), 0);
      for (const [i, n] of counts.entries())
        expect(n).toBe(i % 2 === 0 ? expected : local.countPrompt(input));
      await expect(pool.countTexts(join(dir, "missing.gguf"), ["a"])).rejects.toThrow();
      expect(await pool.countTexts(vocabulary, ["Hello"])).toBe(local.countText("Hello"));
    } finally {
      // Workers free llama.cpp before they end: terminating one that holds it would abort this process.
      await pool.close();
    }
    await expect(pool.countTexts(vocabulary, ["a"])).rejects.toThrow(/closed/);
  });

  it("gives a long text time in proportion to its length: sending more text cannot escape the count", async () => {
    const pool = new TokenizerPool({ threads: 1, timeoutMs: 1 });
    try {
      // Three million characters: far more than a millisecond's tokenizing, well within 1 ms + 12 s.
      const long = "lorem ipsum dolor sit amet ".repeat(111_112);
      expect(await pool.countTexts(vocabulary, [long])).toBe(local.countText(long));
    } finally {
      await pool.close();
    }
  });

  it("refuses a pool without threads", () => {
    expect(() => new TokenizerPool({ threads: 0 })).toThrow(RangeError);
  });
});
