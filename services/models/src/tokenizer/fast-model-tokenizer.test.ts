import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ChatMessage, GenerationInput } from "../chat/generation-input.js";
import type { GgufKv, GgufScalar } from "../gguf/format.js";
import { writeGgufFile } from "../gguf/writer.js";
import { Xoshiro128 } from "../synth/random.js";
import { MODEL_SHAPES } from "../synth/shapes.js";
import { planModel } from "../synth/synthesize.js";
import { FastModelTokenizer } from "./fast-model-tokenizer.js";
import { ModelTokenizer } from "./model-tokenizer.js";
import { describeVocabulary, type VocabularyDescription } from "./vocabulary-description.js";

let dir: string;
let llama: Llama;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-fast-tokenizer-"));
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
});

afterAll(async () => {
  await llama?.dispose();
  await rm(dir, { recursive: true, force: true });
});

// Pieces the inputs are drawn from: every branch of the pre-tokenizers (contractions in both cases,
// letters after a non-letter, digit runs, punctuation runs ending in newlines, whitespace runs with
// and without a newline, at the end and not), the specials of both families typed as text, and
// characters where Unicode tables disagree (marks, non-ASCII spaces and digits, lone surrogates).
const PIECES = [
  "a",
  "b",
  "Z",
  "e",
  "s",
  "t",
  "re",
  "ll",
  "VE",
  "'",
  "’",
  " ",
  "  ",
  "   ",
  "\n",
  "\n\n",
  "\r\n",
  "\t",
  " \n",
  "1",
  "23",
  "4567",
  ".",
  ",",
  "!",
  "?",
  "...",
  " .",
  " ,",
  " ' ",
  "<",
  "|",
  ">",
  "{",
  "}",
  "$",
  "+",
  "~",
  "→",
  "™",
  "é",
  "ß",
  "İ",
  "ǅ",
  "中文",
  "日本",
  "한국어",
  "🙂",
  "👍🏽",
  "\u0301",
  "\u00a0",
  "\u2003",
  "\u3000",
  "\u0085",
  "\u200b",
  "\u2028",
  "Ⅷ",
  "²",
  "٣",
  "߀",
  "\ud800",
  "\udfff",
  "\x00",
  "\x1b",
  "A'S",
  "'LL",
  "'re",
  " 's",
  "don't",
  "<|im_end|>",
  "<|im_start|>",
  "<|endoftext|>",
  "<think>",
  "</think>",
  "<|eot_id|>",
  "<|begin_of_text|>",
  "<|start_header_id|>",
  "Hello",
  " world",
  " the",
  "ing",
  "tion",
  "http://example.com/a?b=1",
  "def f(x):\n    return x",
  "\u{10FFFF}",
  "\u{1F600}",
];

function randomText(rng: Xoshiro128, maxPieces: number): string {
  let s = "";
  const n = rng.next() % (maxPieces + 1);
  for (let i = 0; i < n; i++) s += PIECES[rng.next() % PIECES.length];
  return s;
}

function randomInput(rng: Xoshiro128): GenerationInput {
  if (rng.next() % 5 === 0) return { kind: "text", prompt: randomText(rng, 12) };
  const messages: ChatMessage[] = [];
  if (rng.next() % 2 === 0) messages.push({ role: "system", content: randomText(rng, 6) });
  const turns = 1 + (rng.next() % 3);
  for (let i = 0; i < turns; i++) {
    messages.push({ role: "user", content: randomText(rng, 10) });
    if (i + 1 < turns) messages.push({ role: "assistant", content: randomText(rng, 8) });
  }
  return { kind: "chat", messages };
}

/**
 * Merges (GPT-2 byte characters: Ġ space, Ċ newline, ĉ tab) the synthesized vocabularies lack, put
 * first so they apply: with them, a word boundary the port drew differently from llama.cpp (digit
 * groups, whitespace runs, punctuation with its newlines, contractions) changes the tokens.
 */
const BOUNDARY_MERGES = [
  "1 2",
  "12 3",
  "2 3",
  "3 4",
  "4 5",
  "45 6",
  "456 7",
  "5 6",
  "6 7",
  "Ġ Ġ",
  "ĠĠ Ġ",
  "Ċ Ċ",
  "Ġ Ċ",
  "ĉ Ċ",
  "Ġ ĉ",
  ". .",
  ".. .",
  "Ġ .",
  ". Ċ",
  "! Ċ",
  "' s",
  "' r",
  "'r e",
  "' l",
  "'l l",
  "Ġ '",
  "Ġ 1",
  "Ġ <",
  "< |",
  "| >",
  "Ġ é",
  "Ã ©",
  "a b",
  "Ġ a",
  "Ġ Z",
  "e s",
  "t s",
];

function withBoundaryMerges(kv: GgufKv[]): GgufKv[] {
  const tokens = [...((kv.find((e) => e.key === "tokenizer.ggml.tokens")?.value ?? []) as string[])];
  const types = [...((kv.find((e) => e.key === "tokenizer.ggml.token_type")?.value ?? []) as number[])];
  const merges = (kv.find((e) => e.key === "tokenizer.ggml.merges")?.value ?? []) as string[];
  const known = new Set(tokens);
  for (const merge of BOUNDARY_MERGES) {
    const token = merge.replace(" ", "");
    if (known.has(token)) continue;
    known.add(token);
    tokens.push(token);
    types.push(1);
  }
  const replaced: Record<string, readonly GgufScalar[]> = {
    "tokenizer.ggml.tokens": tokens,
    "tokenizer.ggml.token_type": types,
    "tokenizer.ggml.merges": [...BOUNDARY_MERGES, ...merges],
  };
  return kv
    .filter((e) => e.key !== "tokenizer.ggml.scores")
    .map((e) =>
      e.type === "array" && e.key in replaced ? { ...e, value: replaced[e.key] as GgufScalar[] } : e,
    );
}

async function open(shape: keyof typeof MODEL_SHAPES, boundaryMerges = false): Promise<ModelTokenizer> {
  const path = join(dir, `${shape}${boundaryMerges ? ".merges" : ""}.vocab.gguf`);
  const kv = planModel(shape).kv;
  await writeGgufFile(path, { kv: boundaryMerges ? withBoundaryMerges(kv) : kv, tensors: [] });
  return ModelTokenizer.open(llama, path);
}

const VOCABULARIES = (Object.keys(MODEL_SHAPES) as (keyof typeof MODEL_SHAPES)[]).flatMap((shape) => [
  { shape, boundaryMerges: false },
  { shape, boundaryMerges: true },
]);

describe.each(VOCABULARIES)(
  "FastModelTokenizer on $shape (boundary merges: $boundaryMerges)",
  ({ shape, boundaryMerges }) => {
    it("makes llama.cpp's tokens and counts of random text, prompts and chats", async () => {
      const reference = await open(shape, boundaryMerges);
      try {
        const fast = FastModelTokenizer.create(describeVocabulary(reference));
        expect(fast.wrapper.wrapperName).toBe(reference.wrapper.wrapperName);
        const rng = new Xoshiro128(
          0x5eed,
          VOCABULARIES.findIndex((v) => v.shape === shape && v.boundaryMerges === boundaryMerges),
        );
        const differences: string[] = [];
        for (let i = 0; i < 1500 && differences.length < 5; i++) {
          const text = randomText(rng, 24);
          for (const special of [false, true]) {
            const want = Array.from(reference.model.tokenize(text, special)).join(",");
            const got = fast.tokenize(text, special).join(",");
            if (want !== got)
              differences.push(`tokenize(${JSON.stringify(text)}, ${special}): ${want} | ${got}`);
          }
          if (fast.countText(text) !== reference.countText(text))
            differences.push(`countText(${JSON.stringify(text)})`);
          const input = randomInput(rng);
          const [want, got] = [reference.countPrompt(input), fast.countPrompt(input)];
          if (want !== got) differences.push(`countPrompt(${JSON.stringify(input)}): ${want} | ${got}`);
          // An embedding input: the text with the vocabulary's bounds (tiny-embed appends its EOS).
          const embedding = { kind: "embedding", text } as const;
          const [embedWant, embedGot] = [reference.countPrompt(embedding), fast.countPrompt(embedding)];
          if (embedWant !== embedGot) differences.push(`countPrompt(${JSON.stringify(embedding)})`);
        }
        expect(differences).toEqual([]);
        // Long text is counted word by word from the cache, with the same result.
        const long = `${"The quick brown fox jumps over the lazy dog. ".repeat(400)}1234567890 ${"🙂".repeat(50)}`;
        expect(fast.countText(long)).toBe(reference.countText(long));
        expect(fast.countText(long)).toBe(reference.countText(long));
      } finally {
        await reference.dispose();
      }
    }, 120_000);
  },
);

describe("FastModelTokenizer refuses what it cannot reproduce", () => {
  let description: VocabularyDescription;

  beforeAll(async () => {
    const reference = await open("tiny");
    description = describeVocabulary(reference);
    await reference.dispose();
  });

  const variant = (change: (d: VocabularyDescription) => void): VocabularyDescription => {
    const d = structuredClone(description);
    change(d);
    return d;
  };

  it.each([
    [
      "a vocabulary that is not BPE",
      (d: VocabularyDescription) => {
        d.type = "spm";
      },
      /vocabulary type spm/,
    ],
    [
      "another tokenizer model",
      (d: VocabularyDescription) => {
        d.vocabulary.model = "llama";
      },
      /not byte-level BPE/,
    ],
    [
      "a pre-tokenizer without a port",
      (d: VocabularyDescription) => {
        d.vocabulary.pre = "deepseek-v3";
      },
      /no exact port/,
    ],
    [
      "a leading-space vocabulary",
      (d: VocabularyDescription) => {
        d.vocabulary.addSpacePrefix = true;
      },
      /space prefix/,
    ],
    [
      "a token that was not UTF-8",
      (d: VocabularyDescription) => {
        (d.vocabulary.tokens as string[])[5] = "\uFFFD";
      },
      /token 5/,
    ],
    [
      "another chat template",
      (d: VocabularyDescription) => {
        d.wrapperName = "Llama 3.1";
      },
      /chat template resolves/,
    ],
  ])("%s", (_what, change, reason) => {
    expect(() => FastModelTokenizer.create(variant(change))).toThrow(reason);
  });
});

describe("the Unicode classes", () => {
  it("are llama.cpp's, from the source node-llama-cpp bundles", async () => {
    const script = join(import.meta.dirname, "..", "..", "scripts", "unicode-classes.mjs");
    await expect(promisify(execFile)(process.execPath, [script, "--check"])).resolves.toBeDefined();
  }, 60_000);
});
