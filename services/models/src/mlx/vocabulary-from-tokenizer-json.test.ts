import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GenerationInput } from "../chat/generation-input.js";
import type { GgufKv } from "../gguf/index.js";
import { readGgufMetadata } from "../gguf/reader.js";
import { MODEL_SHAPES } from "../synth/shapes.js";
import { planModel, synthesizeModel } from "../synth/synthesize.js";
import { buildTokenizer } from "../synth/tokenizer.js";
import { ModelTokenizer } from "../tokenizer/model-tokenizer.js";
import { vetVocabularyFile } from "../tokenizer/vocabulary-file.js";
import { tokenizerConfigJson, tokenizerJson } from "./hf-tokenizer.js";
import { synthesizeMlxCheckpoint } from "./synthesize-checkpoint.js";
import {
  readCheckpointTokenizerFiles,
  TokenizerJsonError,
  vocabularyFromTokenizerJson,
  writeVocabularyFromCheckpoint,
} from "./vocabulary-from-tokenizer-json.js";

let dir: string;
let llama: Llama;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-mlx-vocab-"));
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
});
afterAll(async () => {
  await llama?.dispose();
  await rm(dir, { recursive: true, force: true });
});

const TEXTS = [
  "Hello, world",
  " leading space and trailing ",
  "écris une histoire 🙂 über — 1234567\n\n\ttabs",
  "<|im_end|> <|eot_id|> markup a consumer typed",
  "I'm sure they'll see 3.14159 of it",
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

const TOKENIZER_KEYS = [
  "tokenizer.ggml.model",
  "tokenizer.ggml.pre",
  "tokenizer.ggml.tokens",
  "tokenizer.ggml.token_type",
  "tokenizer.ggml.merges",
  "tokenizer.ggml.bos_token_id",
  "tokenizer.ggml.eos_token_id",
  "tokenizer.ggml.padding_token_id",
  "tokenizer.ggml.add_bos_token",
  "tokenizer.chat_template",
];

// biome-ignore lint/suspicious/noExplicitAny: the tests edit the parsed JSON freely to break it
type Files = { tokenizer: any; tokenizerConfig: any; config: any };

const pick = (kv: readonly GgufKv[], keys: string[]) =>
  Object.fromEntries(kv.filter((e) => keys.includes(e.key)).map((e) => [e.key, e.value]));

describe.each(["tiny", "tiny-llama"] as const)(
  "the vocabulary converted from %s's tokenizer.json",
  (shape) => {
    let checkpoint: string;
    let model: string;
    let vocabulary: string;
    beforeAll(async () => {
      checkpoint = join(dir, `${shape}-mlx`);
      model = join(dir, `${shape}.gguf`);
      vocabulary = join(dir, `${shape}-mlx.vocab.gguf`);
      await synthesizeMlxCheckpoint({ shape, seed: 1, outDir: checkpoint, bits: 4 });
      await synthesizeModel({ shape, seed: 1, outPath: model });
      await writeVocabularyFromCheckpoint(checkpoint, vocabulary);
    });

    it("holds the synthesized GGUF's tokenizer and hyperparameters, and no tensor", async () => {
      const meta = await readGgufMetadata(vocabulary);
      const full = await readGgufMetadata(model);
      expect(meta.tensors).toEqual([]);
      expect(pick(meta.kv, TOKENIZER_KEYS)).toEqual(pick(full.kv, TOKENIZER_KEYS));
      const arch = full.kv.filter((e) => e.key.startsWith(`${full.architecture}.`)).map((e) => e.key);
      expect(arch.length).toBeGreaterThan(10);
      expect(pick(meta.kv, ["general.architecture", ...arch])).toEqual(
        pick(full.kv, ["general.architecture", ...arch]),
      );
      expect(pick(meta.kv, ["general.name"])).toEqual({ "general.name": `${shape}-mlx` });
    });

    it("counts every text and renders every prompt as the synthesized GGUF does", async () => {
      const a = await ModelTokenizer.open(llama, model);
      const b = await ModelTokenizer.open(llama, vocabulary);
      try {
        expect(b.wrapper.wrapperName).toBe(a.wrapper.wrapperName);
        for (const text of TEXTS) {
          expect(b.countText(text), text).toBe(a.countText(text));
          expect(b.countText(text)).toBeGreaterThan(0);
        }
        for (const input of INPUTS) {
          expect(b.render(input).tokens).toEqual(a.render(input).tokens);
          expect(b.countPrompt(input)).toBe(a.countPrompt(input));
        }
      } finally {
        await a.dispose();
        await b.dispose();
      }
    });

    it("passes the child-process vetting", async () => {
      expect(await vetVocabularyFile(vocabulary)).toEqual({ ok: true });
    });
  },
);

describe("full-size vocabularies (Qwen3's padded one with user-defined tokens, Llama 3's 256 specials)", () => {
  it.each(["qwen3-0.6b", "llama-3.2-1b"] as const)(
    "%s converts to the synthesizer's tokenizer keys",
    (shape) => {
      const s = MODEL_SHAPES[shape];
      const tok = buildTokenizer(s.tokenizer, s.vocabSize, s.minimalSpecials);
      const files = {
        tokenizer: JSON.parse(tokenizerJson(tok)),
        tokenizerConfig: JSON.parse(tokenizerConfigJson(tok, s.contextLength)),
        // As the Hugging Face configs of these models say (Qwen3's tokenizer_config has no bos_token).
        config: {
          model_type: s.architecture,
          hidden_size: s.embeddingLength,
          num_hidden_layers: s.blockCount,
          intermediate_size: s.feedForwardLength,
          num_attention_heads: s.headCount,
          num_key_value_heads: s.headCountKv,
          head_dim: s.headDim,
          max_position_embeddings: s.contextLength,
          rms_norm_eps: s.rmsEps,
          rope_theta: s.ropeFreqBase,
          vocab_size: s.vocabSize,
          bos_token_id: tok.bosId,
        },
      };
      const { kv } = vocabularyFromTokenizerJson(files);
      expect(pick(kv, TOKENIZER_KEYS)).toEqual(pick(planModel(shape).kv, TOKENIZER_KEYS));
    },
  );
});

describe("tokenizer files converted as llama.cpp's converter reads them", () => {
  let base: Awaited<ReturnType<typeof readCheckpointTokenizerFiles>>;
  let checkpoint: string;
  beforeAll(async () => {
    checkpoint = join(dir, "tiny-files");
    await synthesizeMlxCheckpoint({ shape: "tiny", seed: 2, outDir: checkpoint, bits: 4 });
    base = await readCheckpointTokenizerFiles(checkpoint);
  });
  const clone = () => structuredClone(base) as Files;

  it("reads merges in the [left, right] form newer `tokenizers` writes", () => {
    const f = clone();
    f.tokenizer.model.merges = f.tokenizer.model.merges.map((m: string) => m.split(" "));
    const merges = vocabularyFromTokenizerJson(base).tokenizer.merges;
    expect(merges.length).toBeGreaterThan(200);
    expect(vocabularyFromTokenizerJson(f).tokenizer.merges).toEqual(merges);
  });

  it("takes the chat template from chat_template.jinja when tokenizer_config.json has none", async () => {
    const other = join(dir, "jinja");
    await cp(checkpoint, other, { recursive: true });
    const config = JSON.parse(await readFile(join(other, "tokenizer_config.json"), "utf8"));
    const template = config.chat_template;
    delete config.chat_template;
    await writeFile(join(other, "tokenizer_config.json"), JSON.stringify(config));
    await writeFile(join(other, "chat_template.jinja"), template);
    expect(
      vocabularyFromTokenizerJson(await readCheckpointTokenizerFiles(other)).tokenizer.chatTemplate,
    ).toBe(template);
  });

  it("marks added tokens as llama.cpp does: special or <|…|> → control, others user-defined", () => {
    const f = clone();
    f.tokenizer.added_tokens.push(
      { id: 512, content: "<think>", special: false },
      { id: 513, content: "<|looks_special|>", special: false },
    );
    f.config.vocab_size = 516;
    const { tokens, tokenTypes } = vocabularyFromTokenizerJson(f).tokenizer;
    expect(tokens.slice(512)).toEqual(["<think>", "<|looks_special|>", "[PAD514]", "[PAD515]"]);
    expect(tokenTypes.slice(509)).toEqual([3, 3, 3, 4, 3, 5, 5]);
  });

  const refusals: [string, (f: Files) => void, RegExp][] = [
    [
      "a Unigram model",
      (f) => (f.tokenizer.model.type = "Unigram"),
      /model\.type is "Unigram"; only byte-level BPE/,
    ],
    ["byte fallback", (f) => (f.tokenizer.model.byte_fallback = true), /byte_fallback/],
    [
      "a subword prefix",
      (f) => (f.tokenizer.model.continuing_subword_prefix = "##"),
      /continuing_subword_prefix is "##"/,
    ],
    [
      "an unknown split pattern",
      (f) => (f.tokenizer.pre_tokenizer.pretokenizers[0].pattern.Regex = "\\w+"),
      /split pattern "\\\\w\+" is none llama.cpp implements/,
    ],
    [
      "a Metaspace pre-tokenizer",
      (f) => (f.tokenizer.pre_tokenizer = { type: "Metaspace" }),
      /pre_tokenizer \{"type":"Metaspace"\} is none llama.cpp implements/,
    ],
    [
      "a lowercasing normalizer",
      (f) => (f.tokenizer.normalizer = { type: "Lowercase" }),
      /normalizer \{"type":"Lowercase"\}/,
    ],
    [
      "another decoder",
      (f) => (f.tokenizer.decoder = { type: "Metaspace" }),
      /decoder \{"type":"Metaspace"\} is not ByteLevel/,
    ],
    ["an id given twice", (f) => (f.tokenizer.model.vocab.Ġthe = 0), /id 0 is given to both/],
    [
      "a merge of unknown tokens",
      (f) => f.tokenizer.model.merges.push("Ġzzz q"),
      /merge \d+ \("Ġzzz q"\) makes or uses "Ġzzz"/,
    ],
    ["a missing byte token", (f) => delete f.tokenizer.model.vocab.A, /the byte token "A" is missing/],
    [
      "an added token over a regular one",
      (f) => f.tokenizer.added_tokens.push({ id: 5, content: "<x>" }),
      /added token "<x>" has the id 5 of/,
    ],
    [
      "a malformed added token",
      (f) => f.tokenizer.added_tokens.push({ id: -1, content: "<x>" }),
      /added_tokens\[3\] is not \{id, content\}/,
    ],
    [
      "an unknown architecture",
      (f) => (f.config.model_type = "gemma3"),
      /model_type "gemma3" is not one of llama, qwen2, qwen3/,
    ],
    [
      "a vocab_size below the ids",
      (f) => (f.config.vocab_size = 100),
      /vocab_size 100 does not cover the tokenizer's ids \(up to 511\)/,
    ],
    [
      "a missing hyperparameter",
      (f) => delete f.config.hidden_size,
      /hidden_size must be a positive integer/,
    ],
    ["no model at all", (f) => delete f.tokenizer.model, /has no model object/],
  ];
  it.each(refusals)("refuses %s, naming it", (_what, change, message) => {
    const f = clone();
    change(f);
    const err = (() => {
      try {
        vocabularyFromTokenizerJson(f);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(TokenizerJsonError);
    expect((err as Error).message).toMatch(message);
  });

  it("refuses a tokenizer.json that is not JSON, or missing, and writes nothing", async () => {
    const broken = join(dir, "broken");
    await cp(checkpoint, broken, { recursive: true });
    await writeFile(join(broken, "tokenizer.json"), '{"model": ');
    const dest = join(dir, "broken.vocab.gguf");
    await expect(writeVocabularyFromCheckpoint(broken, dest)).rejects.toThrow(/tokenizer\.json is not JSON/);
    await rm(join(broken, "tokenizer.json"));
    await expect(writeVocabularyFromCheckpoint(broken, dest)).rejects.toThrow(/tokenizer\.json is missing/);
    await expect(readFile(dest)).rejects.toThrow();
  });
});
