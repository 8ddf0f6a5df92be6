/**
 * Synthetic byte-level BPE tokenizers ("gpt2" model in GGUF terms, as Qwen3 and Llama 3 use): the 256
 * byte tokens in GPT-2's printable byte mapping, merges learned from a small embedded English corpus
 * (so ordinary prompts tokenize into multi-character pieces), then deterministic filler merges
 * (word-start marker or letter, followed by lowercase letters) up to the requested vocabulary size,
 * then the family's special tokens. Deterministic: no randomness at all.
 */

/** GGUF tokenizer.ggml.token_type values (llama_token_type). */
export const TokenType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** GPT-2's reversible byte → printable character mapping. */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const map: string[] = new Array(256);
  for (const b of bs) map[b] = String.fromCodePoint(b);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (map[b] === undefined) {
      map[b] = String.fromCodePoint(256 + n);
      n++;
    }
  }
  return map;
}

const BYTE_CHARS = bytesToUnicode();

/** Maps text to its byte-level symbols (one per UTF-8 byte). */
export function byteLevelSymbols(text: string): string[] {
  return [...Buffer.from(text, "utf8")].map((b) => BYTE_CHARS[b]!);
}

const CORPUS = `Darkbloom is a private, decentralized network for large language model inference. Providers run a small
daemon on their own machines and serve models to consumers through a coordinator. The coordinator routes each
request to the provider that can answer it at the lowest cost, streams the tokens back, and settles the payment.
A language model reads a prompt as a sequence of tokens and predicts the next token, one at a time, until it
reaches a stop sequence, the end of the text, or the maximum number of tokens. The quick brown fox jumps over the
lazy dog. Hello, world! How are you today? I am fine, thank you. What is the capital of France? The capital of
France is Paris. Please write a short story about a robot who learns to paint. Once upon a time, there was a
little robot that lived in a quiet town by the sea. Every morning it watched the sun rise over the water and
wished it could share what it saw with the people it loved. Explain how continuous batching works in an
inference server: requests join and leave a running batch, and every step decodes one token for each row.
The system is fast, the answer is correct, and the user is happy. Numbers like 1, 2, 3, 10, 42 and 2048 appear
in text too, as do questions, answers, lists, and code such as function add(a, b) { return a + b; }.`;

/** GPT-2 style pre-tokenization, close enough for training a toy vocabulary. */
const PRETOKENIZE = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Learns up to `maxMerges` BPE merges from the embedded corpus (pairs seen at least twice). */
function trainCorpusMerges(maxMerges: number): [string, string][] {
  const wordCounts = new Map<string, number>();
  for (const m of CORPUS.replace(/\n/g, " ").matchAll(PRETOKENIZE)) {
    wordCounts.set(m[0], (wordCounts.get(m[0]) ?? 0) + 1);
  }
  const words = [...wordCounts.entries()]
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([w, count]) => ({ symbols: byteLevelSymbols(w), count }));
  const merges: [string, string][] = [];
  while (merges.length < maxMerges) {
    const pairCounts = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairCounts.set(key, (pairCounts.get(key) ?? 0) + count);
      }
    }
    let best: string | undefined;
    let bestCount = 1;
    for (const [key, count] of pairCounts) {
      if (count > bestCount || (count === bestCount && best !== undefined && key < best)) {
        best = key;
        bestCount = count;
      }
    }
    if (best === undefined) break;
    const space = best.indexOf(" ", 1);
    const left = best.slice(0, space);
    const right = best.slice(space + 1);
    merges.push([left, right]);
    const merged = left + right;
    for (const word of words) {
      const s = word.symbols;
      const out: string[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === left && s[i + 1] === right) {
          out.push(merged);
          i++;
        } else out.push(s[i]!);
      }
      word.symbols = out;
    }
  }
  return merges;
}

export interface BpeVocab {
  /** Regular tokens: 256 byte tokens first, then one token per merge. */
  tokens: string[];
  /** "left right" strings in rank order. */
  merges: string[];
}

/** Builds a byte-level BPE vocabulary with exactly `regularSize` regular tokens (>= 256). */
export function buildBpeVocab(regularSize: number): BpeVocab {
  if (!Number.isInteger(regularSize) || regularSize < 256)
    throw new Error("a byte-level vocabulary needs >= 256 tokens");
  const tokens = [...BYTE_CHARS];
  const known = new Set(tokens);
  const merges: string[] = [];
  const add = (left: string, right: string): void => {
    const merged = left + right;
    if (known.has(merged) || !known.has(left) || !known.has(right)) return;
    known.add(merged);
    tokens.push(merged);
    merges.push(`${left} ${right}`);
  };
  for (const [left, right] of trainCorpusMerges(Math.min(600, regularSize - 256))) {
    if (tokens.length >= regularSize) break;
    add(left, right);
  }
  // Filler: breadth-first extension of word starts by lowercase letters.
  const lower = [..."abcdefghijklmnopqrstuvwxyz"];
  const wordStart = BYTE_CHARS[0x20]!; // "Ġ", the byte-level space
  let frontier = [wordStart, ...lower, ..."ABCDEFGHIJKLMNOPQRSTUVWXYZ"];
  while (tokens.length < regularSize) {
    const next: string[] = [];
    for (const prefix of frontier) {
      for (const c of lower) {
        if (tokens.length >= regularSize) break;
        const merged = prefix + c;
        if (!known.has(merged)) add(prefix, c);
        next.push(merged);
      }
      if (tokens.length >= regularSize) break;
    }
    frontier = next;
  }
  return { tokens, merges };
}

export interface SpecialToken {
  text: string;
  type: number;
}

export type TokenizerFamily = "qwen" | "llama3";

export interface TokenizerSpec {
  family: TokenizerFamily;
  /** tokenizer.ggml.pre */
  pre: string;
  tokens: string[];
  tokenTypes: number[];
  merges: string[];
  bosId: number;
  eosId: number;
  eotId?: number;
  padId: number;
  addBos: boolean;
  /** Whether llama.cpp appends EOS to a tokenized input (an embedding model's vocabulary). */
  addEos?: boolean;
  chatTemplate: string;
}

/** A ChatML template in Qwen3's style (without tools or thinking), rendered by llama.cpp and node-llama-cpp. */
export const CHATML_TEMPLATE =
  "{%- for message in messages %}" +
  "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/** Llama 3's header/eot template. */
export const LLAMA3_TEMPLATE =
  "{{- bos_token }}" +
  "{%- for message in messages %}" +
  "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}" +
  "{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

const QWEN_SPECIALS: SpecialToken[] = [
  { text: "<|endoftext|>", type: TokenType.CONTROL },
  { text: "<|im_start|>", type: TokenType.CONTROL },
  { text: "<|im_end|>", type: TokenType.CONTROL },
  { text: "<|object_ref_start|>", type: TokenType.CONTROL },
  { text: "<|object_ref_end|>", type: TokenType.CONTROL },
  { text: "<|box_start|>", type: TokenType.CONTROL },
  { text: "<|box_end|>", type: TokenType.CONTROL },
  { text: "<|quad_start|>", type: TokenType.CONTROL },
  { text: "<|quad_end|>", type: TokenType.CONTROL },
  { text: "<|vision_start|>", type: TokenType.CONTROL },
  { text: "<|vision_end|>", type: TokenType.CONTROL },
  { text: "<|vision_pad|>", type: TokenType.CONTROL },
  { text: "<|image_pad|>", type: TokenType.CONTROL },
  { text: "<|video_pad|>", type: TokenType.CONTROL },
  { text: "<tool_call>", type: TokenType.USER_DEFINED },
  { text: "</tool_call>", type: TokenType.USER_DEFINED },
  { text: "<|fim_prefix|>", type: TokenType.CONTROL },
  { text: "<|fim_middle|>", type: TokenType.CONTROL },
  { text: "<|fim_suffix|>", type: TokenType.CONTROL },
  { text: "<|fim_pad|>", type: TokenType.CONTROL },
  { text: "<|repo_name|>", type: TokenType.CONTROL },
  { text: "<|file_sep|>", type: TokenType.CONTROL },
  { text: "<tool_response>", type: TokenType.USER_DEFINED },
  { text: "</tool_response>", type: TokenType.USER_DEFINED },
  { text: "<think>", type: TokenType.USER_DEFINED },
  { text: "</think>", type: TokenType.USER_DEFINED },
];

function llama3Specials(count: number): SpecialToken[] {
  const named: Record<number, string> = {
    0: "<|begin_of_text|>",
    1: "<|end_of_text|>",
    4: "<|finetune_right_pad_id|>",
    6: "<|start_header_id|>",
    7: "<|end_header_id|>",
    8: "<|eom_id|>",
    9: "<|eot_id|>",
    10: "<|python_tag|>",
  };
  const out: SpecialToken[] = [];
  let reserved = 0;
  for (let i = 0; i < count; i++) {
    const text = named[i] ?? `<|reserved_special_token_${reserved++}|>`;
    out.push({ text, type: TokenType.CONTROL });
  }
  return out;
}

/**
 * The tokenizer for a family at a total vocabulary size. `minimal` keeps only the special tokens the
 * chat format needs (for tiny test models); otherwise the family's real special-token layout is used
 * (Qwen: 26 specials after the regular tokens, then [PADn] to the padded size; Llama 3: 256 specials).
 */
export function buildTokenizer(family: TokenizerFamily, vocabSize: number, minimal: boolean): TokenizerSpec {
  let specials: SpecialToken[];
  let regularSize: number;
  if (family === "qwen") {
    specials = minimal
      ? QWEN_SPECIALS.filter((s) => s.type === TokenType.CONTROL).slice(0, 3)
      : QWEN_SPECIALS;
    // Real Qwen vocabularies are padded past the specials (151643 regular + 26 specials, padded to 151936).
    const padded = minimal ? 0 : Math.max(0, vocabSize - 151669);
    regularSize = vocabSize - specials.length - padded;
  } else {
    specials = llama3Specials(minimal ? 10 : 256);
    regularSize = vocabSize - specials.length;
  }
  if (regularSize < 256)
    throw new Error(`vocabulary of ${vocabSize} is too small for the ${family} specials`);
  const bpe = buildBpeVocab(regularSize);
  const tokens = [...bpe.tokens];
  const tokenTypes: number[] = tokens.map(() => TokenType.NORMAL);
  for (const s of specials) {
    tokens.push(s.text);
    tokenTypes.push(s.type);
  }
  while (tokens.length < vocabSize) {
    tokens.push(`[PAD${tokens.length}]`);
    tokenTypes.push(TokenType.UNUSED);
  }
  const id = (text: string): number => {
    const i = tokens.indexOf(text, regularSize);
    if (i < 0) throw new Error(`missing special token ${text}`);
    return i;
  };
  if (family === "qwen") {
    return {
      family,
      pre: "qwen2",
      tokens,
      tokenTypes,
      merges: bpe.merges,
      bosId: id("<|endoftext|>"),
      eosId: id("<|im_end|>"),
      padId: id("<|endoftext|>"),
      addBos: false,
      chatTemplate: CHATML_TEMPLATE,
    };
  }
  return {
    family,
    pre: "llama-bpe",
    tokens,
    tokenTypes,
    merges: bpe.merges,
    bosId: id("<|begin_of_text|>"),
    eosId: id("<|eot_id|>"),
    eotId: id("<|eot_id|>"),
    padId: id("<|finetune_right_pad_id|>"),
    addBos: true,
    chatTemplate: LLAMA3_TEMPLATE,
  };
}

/**
 * A Qwen tokenizer as llama.cpp converts Qwen3-Embedding's: its tokenizer.json post-processor
 * (TemplateProcessing `$A <|endoftext|>`) appends `<|endoftext|>` to every input, so gguf-py makes
 * that token EOS with add_eos_token true and moves tokenizer_config's EOS (`<|im_end|>`) to EOT
 * (llama.cpp PR #14314). BOS and padding stay `<|endoftext|>`, add_bos false.
 */
export function embeddingTokenizer(tok: TokenizerSpec): TokenizerSpec {
  if (tok.family !== "qwen") {
    throw new Error(`embedding vocabularies are written for the qwen family only (got ${tok.family})`);
  }
  const endOfText = tok.tokens.indexOf("<|endoftext|>");
  return { ...tok, eosId: endOfText, eotId: tok.eosId, addEos: true };
}
