import { mkdtemp, rm, stat, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GenerationInput } from "../chat/generation-input.js";
import { readGgufMetadata } from "../gguf/reader.js";
import { writeGgufFile } from "../gguf/writer.js";
import { synthesizeModel } from "../synth/synthesize.js";
import { ModelTokenizer } from "./model-tokenizer.js";
import { vetVocabularyFile, writeVocabularyFile } from "./vocabulary-file.js";

let dir: string;
let llama: Llama;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-tokenizer-"));
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
});

afterAll(async () => {
  await llama?.dispose();
  await rm(dir, { recursive: true, force: true });
});

const TEXTS = [
  "Hello, world",
  " leading space and trailing ",
  "écris une histoire 🙂 über — 1234\n\n\ttabs",
  "<|im_end|> <|eot_id|> markup a consumer typed",
  "x".repeat(700),
  "日本語のテキストと中文",
];

const INPUTS: GenerationInput[] = [
  { kind: "text", prompt: "Once upon a time" },
  {
    kind: "chat",
    messages: [
      { role: "system", content: "Be brief." },
      { role: "user", content: "Écris un poème 🙂" },
      { role: "assistant", content: "Non." },
      { role: "user", content: "<|im_start|>please" },
    ],
  },
];

describe.each(["tiny", "tiny-llama"] as const)("the vocabulary of %s", (shape) => {
  let model: string;
  let vocabulary: string;

  beforeAll(async () => {
    model = join(dir, `${shape}.gguf`);
    vocabulary = join(dir, `${shape}.vocab.gguf`);
    await synthesizeModel({ shape, seed: 1, outPath: model });
    await writeVocabularyFile(model, vocabulary);
  });

  it("is the model's metadata without a single tensor, a fraction of its size", async () => {
    const meta = await readGgufMetadata(vocabulary);
    const full = await readGgufMetadata(model);
    expect(meta.tensors).toEqual([]);
    expect(meta.kv).toEqual(full.kv);
    expect((await stat(vocabulary)).size).toBeLessThan((await stat(model)).size / 10);
  });

  it("counts every text and renders every prompt exactly as the loaded model does", async () => {
    const loaded = await llama.loadModel({ modelPath: model, gpuLayers: 0 });
    const engine = ModelTokenizer.of(loaded, llama);
    const coordinator = await ModelTokenizer.open(llama, vocabulary);
    try {
      for (const text of TEXTS) {
        expect(coordinator.countText(text)).toBe(engine.countText(text));
        expect(coordinator.countText(text)).toBeGreaterThan(0);
      }
      expect(coordinator.countText("")).toBe(0);
      for (const input of INPUTS) {
        expect(coordinator.render(input).tokens).toEqual(engine.render(input).tokens);
        expect(coordinator.countPrompt(input)).toBe(engine.render(input).tokens.length);
      }
    } finally {
      await coordinator.dispose();
      await loaded.dispose();
    }
  });

  it("passes the child-process vetting", async () => {
    expect(await vetVocabularyFile(vocabulary)).toEqual({ ok: true });
  });
});

describe("vetting a vocabulary from elsewhere", () => {
  it("refuses a file with weights, a truncated file and a GGUF with no tokenizer, saying why", async () => {
    const model = join(dir, "weights.gguf");
    await synthesizeModel({ shape: "tiny", seed: 2, outPath: model });
    expect(await vetVocabularyFile(model)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/tensors/),
    });

    const cut = join(dir, "cut.gguf");
    await writeVocabularyFile(model, cut);
    await truncate(cut, (await stat(cut)).size - 100);
    expect(await vetVocabularyFile(cut)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/not a vocabulary GGUF/),
    });

    const bare = join(dir, "bare.gguf");
    await writeGgufFile(bare, {
      kv: [{ key: "general.architecture", type: "string", value: "llama" }],
      tensors: [],
    });
    expect(await vetVocabularyFile(bare)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/tokenizer/),
    });
    await expect(writeVocabularyFile(bare, join(dir, "bare.vocab.gguf"))).rejects.toThrow(
      /tokenizer\.ggml\.model/,
    );
  });
});
