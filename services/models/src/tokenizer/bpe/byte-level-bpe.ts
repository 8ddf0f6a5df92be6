/**
 * llama.cpp's byte-level BPE tokenizer (llm_tokenizer_bpe_session with GPT-2 byte encoding) in
 * TypeScript, for the pre-tokenizers in pre-tokenize.ts: special-token partitioning, word splitting,
 * merges by rank, and llama_detokenize. Built from the vocabulary's tokens and merges plus the token
 * attributes llama.cpp derived at load (those carry its per-model fix-ups, which the file does not),
 * it gives the same tokens as llama.cpp for every input; words are cached, so text made of words
 * seen before costs a map look-up a word instead of a BPE run. Vocabularies it does not cover
 * exactly are refused by `byteLevelSupport`, and the caller counts those with llama.cpp.
 */
import { type PreTokenizer, splitWords } from "./pre-tokenize.js";
import { MergeTable, TokenTable } from "./token-table.js";
import { codePointClasses, contractionLower } from "./unicode-classes.js";

/** llama_token_attr bits (node-llama-cpp's TokenAttribute). */
export const TokenAttr = {
  unknown: 1,
  unused: 2,
  normal: 4,
  control: 8,
  userDefined: 16,
  byte: 32,
  lstrip: 128,
  rstrip: 256,
} as const;

/** A vocabulary as llama.cpp loaded it. */
export interface BpeVocabulary {
  /** tokenizer.ggml.model */
  model: string;
  /** tokenizer.ggml.pre */
  pre: string;
  /** tokenizer.ggml.add_space_prefix, when the file sets it. */
  addSpacePrefix?: boolean;
  tokens: readonly string[];
  merges: readonly string[];
  /** llama.cpp's attributes of every token (TokenAttr bits). */
  attributes: Uint32Array;
}

interface Settings {
  pre: PreTokenizer;
  ignoreMerges: boolean;
  cleanSpaces: boolean;
}

/** tokenizer.ggml.pre values and the settings llama.cpp gives them (llama-vocab.cpp, load). */
const PRE_TOKENIZERS: Record<string, Settings> = {};
for (const name of ["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2"]) {
  PRE_TOKENIZERS[name] = { pre: "qwen2", ignoreMerges: false, cleanSpaces: false };
}
for (const name of [
  "llama3",
  "llama-v3",
  "llama-bpe",
  "falcon3",
  "falcon-h1",
  "pixtral",
  "midm-2.0",
  "lfm2",
]) {
  PRE_TOKENIZERS[name] = { pre: "llama3", ignoreMerges: true, cleanSpaces: true };
}
for (const name of ["gpt-2", "phi-2", "gigachat", "a.x-4.0", "mellum"]) {
  PRE_TOKENIZERS[name] = { pre: "gpt2", ignoreMerges: false, cleanSpaces: true };
}

/** The settings for a vocabulary this tokenizer reproduces exactly, or why it cannot. */
export function byteLevelSupport(v: BpeVocabulary): Settings | string {
  if (v.model !== "gpt2") return `tokenizer model ${JSON.stringify(v.model)} is not byte-level BPE`;
  const settings = Object.hasOwn(PRE_TOKENIZERS, v.pre) ? PRE_TOKENIZERS[v.pre] : undefined;
  if (!settings) return `pre-tokenizer ${JSON.stringify(v.pre)} has no exact port`;
  if (v.addSpacePrefix) return "the vocabulary adds a space prefix";
  if (v.attributes.length !== v.tokens.length) return "attributes and tokens differ in number";
  for (let id = 0; id < v.tokens.length; id++) {
    const text = v.tokens[id] as string;
    // A token that was not valid UTF-8 in the file decodes with U+FFFD: it cannot be matched here.
    if (text.includes("\uFFFD")) return `token ${id} is not valid UTF-8`;
    if ((v.attributes[id] as number) & TokenAttr.byte) return `token ${id} is a byte token`;
  }
  return settings;
}

/** GPT-2's byte-to-character table (unicode.cpp, unicode_byte_to_utf8_map) and its inverse. */
const BYTE_CHAR: string[] = [];
const CHAR_BYTE = new Map<number, number>();
{
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    const cp = printable ? b : 256 + n++;
    BYTE_CHAR[b] = String.fromCharCode(cp);
    CHAR_BYTE.set(cp, b);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** Words whose tokens are kept (a cache that fills is emptied: the words in use come back first). */
const WORD_CACHE_LIMIT = 32_768;

/** A piece of text after special-token partitioning: text to tokenize, or a special token's id. */
type Fragment = string | number;

interface Special {
  id: number;
  text: string;
  attr: number;
}

export class ByteLevelBpe {
  private readonly settings: Settings;
  private readonly table: TokenTable;
  private readonly merges: MergeTable;
  /** The token of each byte's character. */
  private readonly byteIds = new Int32Array(256);
  private readonly specials: Special[];
  /** First code units of the special tokens: text without any of them needs no partitioning. */
  private readonly specialStarts: string[];
  private readonly attributes: Uint32Array;
  private readonly cache = new Map<string, readonly number[]>();
  private cps = new Int32Array(256);
  private cls = new Uint8Array(256);
  private units = new Int32Array(257);

  /** Throws (with the reason) for a vocabulary this port does not reproduce exactly. */
  constructor(v: BpeVocabulary) {
    const settings = byteLevelSupport(v);
    if (typeof settings === "string")
      throw new Error(`no exact byte-level BPE for this vocabulary: ${settings}`);
    this.settings = settings;
    this.attributes = v.attributes;
    // llama.cpp names empty tokens "[EMPTY_<id>]", and refuses a vocabulary that repeats a text.
    const tokens = v.tokens.map((t, i) => (t === "" ? `[EMPTY_${i}]` : t));
    this.table = new TokenTable(tokens);
    for (let id = 0; id < tokens.length; id++) {
      if (this.table.id(tokens[id] as string) !== id)
        throw new Error(`token ${id} repeats another token's text`);
    }
    // Symbols are tokens throughout (so BPE can run on ids) when every byte is one and every merge
    // makes one; a merge whose halves are not tokens can then never apply.
    for (let b = 0; b < 256; b++) {
      const id = this.table.id(BYTE_CHAR[b] as string);
      if (id < 0) throw new Error(`byte 0x${b.toString(16)} has no token`);
      this.byteIds[b] = id;
    }
    this.merges = new MergeTable(v.merges.length);
    v.merges.forEach((merge, rank) => {
      // llama.cpp splits at the first space after the first byte; a merge without one is ("", "")
      // and matches no pair of symbols.
      const at = merge.indexOf(" ", 1);
      if (at < 0) return;
      const left = this.table.id(merge, 0, at);
      const right = this.table.id(merge, at + 1);
      if (left < 0 || right < 0) return;
      const merged = this.table.id(merge.slice(0, at) + merge.slice(at + 1));
      if (merged < 0) throw new Error(`merge ${rank} makes no token`);
      this.merges.add(left, right, rank, merged);
    });
    const specials: Special[] = [];
    for (let id = 0; id < tokens.length; id++) {
      const attr = v.attributes[id] as number;
      if (attr & (TokenAttr.control | TokenAttr.userDefined | TokenAttr.unknown)) {
        specials.push({ id, text: tokens[id] as string, attr });
      }
    }
    // Longest first, by bytes (llama.cpp's order). llama.cpp leaves the order of equal lengths
    // unspecified (std::sort); here it is by id. It matters only where two specials of one length
    // overlap in a text, and there a provider's disagreement sends the count to llama.cpp.
    const bytes = new Map(specials.map((s) => [s.id, encoder.encode(s.text).length]));
    specials.sort((a, b) => (bytes.get(b.id) as number) - (bytes.get(a.id) as number) || a.id - b.id);
    this.specials = specials;
    this.specialStarts = [...new Set(specials.map((s) => s.text[0] as string))];
    codePointClasses();
  }

  get size(): number {
    return this.table.size;
  }

  attributesOf(token: number): number {
    return this.attributes[token] ?? 0;
  }

  /** llama_tokenize(text, add_special = false, parse_special = `special`). */
  tokenize(text: string, special: boolean): number[] {
    const out: number[] = [];
    this.forEachPiece(text, special, (ids) => {
      for (const id of ids) out.push(id);
    });
    return out;
  }

  /** The number of tokens `tokenize(text, false)` makes, without building the list. */
  count(text: string): number {
    let n = 0;
    this.forEachPiece(text, false, (ids) => {
      n += ids.length;
    });
    return n;
  }

  /** llama_detokenize(tokens, remove_special = false, unparse_special = `special`), as bytes. */
  detokenizeBytes(tokens: readonly number[], special: boolean): Uint8Array {
    const parts: Uint8Array[] = [];
    let total = 0;
    for (const token of tokens) {
      const piece = this.piece(token, special);
      parts.push(piece);
      total += piece.length;
    }
    const text = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      text.set(p, at);
      at += p.length;
    }
    return this.settings.cleanSpaces ? cleanSpaces(text) : text;
  }

  /** llama_detokenize as a string (invalid UTF-8 becomes U+FFFD, as node-llama-cpp returns it). */
  detokenize(tokens: readonly number[], special: boolean): string {
    return decoder.decode(this.detokenizeBytes(tokens, special));
  }

  /** llama_token_to_piece with no lstrip. */
  piece(token: number, special: boolean): Uint8Array {
    const attr = this.attributes[token];
    if (attr === undefined || token < 0) return new Uint8Array(0);
    const text = this.table.textOf(token);
    if (!special && attr & (TokenAttr.unknown | TokenAttr.control)) return new Uint8Array(0);
    if (attr & (TokenAttr.unknown | TokenAttr.control | TokenAttr.userDefined)) return encoder.encode(text);
    if (attr & TokenAttr.normal) {
      // llama_decode_text: each character back to its byte; one outside the table is spelled out.
      const bytes: number[] = [];
      for (const ch of text) {
        const cp = ch.codePointAt(0) as number;
        const b = CHAR_BYTE.get(cp);
        if (b !== undefined) bytes.push(b);
        else
          for (const x of encoder.encode(`[UNK_BYTE_0x${Buffer.from(ch).toString("hex")}${text}]`))
            bytes.push(x);
      }
      return Uint8Array.from(bytes);
    }
    return new Uint8Array(0);
  }

  /** tokenizer_st_partition: special tokens (only user-defined ones unless `special`) cut out first. */
  private partition(text: string, special: boolean): Fragment[] {
    if (!this.specialStarts.some((s) => text.includes(s))) return [text];
    let fragments: Fragment[] = [text];
    for (const sp of this.specials) {
      if (!special && sp.attr & (TokenAttr.control | TokenAttr.unknown)) continue;
      let next: Fragment[] | undefined;
      for (let i = 0; i < fragments.length; i++) {
        const f = fragments[i] as Fragment;
        if (typeof f === "number" || !f.includes(sp.text)) {
          next?.push(f);
          continue;
        }
        next ??= fragments.slice(0, i);
        let rest = f;
        for (;;) {
          const m = rest.indexOf(sp.text);
          if (m < 0) {
            if (rest !== "") next.push(rest);
            break;
          }
          let left = rest.slice(0, m);
          if (sp.attr & TokenAttr.lstrip) left = left.replace(/[ \t\n\v\f\r]+$/, "");
          if (left !== "") next.push(left);
          next.push(sp.id);
          rest = rest.slice(m + sp.text.length);
          if (sp.attr & TokenAttr.rstrip) rest = rest.replace(/^[ \t\n\v\f\r]+/, "");
          if (rest === "") break;
        }
      }
      if (next) fragments = next;
    }
    return fragments;
  }

  /** Code points of `text`, their classes, and where each starts in `text`; returns how many. */
  private decode(text: string): number {
    if (this.cps.length < text.length) {
      const size = text.length * 2;
      this.cps = new Int32Array(size);
      this.cls = new Uint8Array(size);
      this.units = new Int32Array(size + 1);
    }
    const table = codePointClasses();
    let n = 0;
    for (let i = 0; i < text.length; ) {
      const cp = text.codePointAt(i) as number;
      this.cps[n] = cp;
      this.cls[n] = table[cp] as number;
      this.units[n] = i;
      n++;
      i += cp > 0xffff ? 2 : 1;
    }
    this.units[n] = text.length;
    return n;
  }

  /** Calls `visit` with the tokens of each piece of `text` in order: a special token, or a word. */
  private forEachPiece(text: string, special: boolean, visit: (ids: readonly number[]) => void): void {
    if (text === "") return;
    for (const fragment of this.partition(wellFormed(text), special)) {
      if (typeof fragment === "number") {
        visit([fragment]);
        continue;
      }
      const n = this.decode(fragment);
      const units = this.units;
      let start = 0;
      splitWords(this.settings.pre, this.cps, this.cls, n, contractionLower, (end) => {
        visit(this.word(fragment.slice(units[start], units[end])));
        start = end;
      });
    }
  }

  /** The tokens of one word (cached). */
  private word(word: string): readonly number[] {
    let ids = this.cache.get(word);
    if (ids) return ids;
    ids = this.bpe(word);
    if (this.cache.size >= WORD_CACHE_LIMIT) this.cache.clear();
    this.cache.set(word, ids);
    return ids;
  }

  /** llm_tokenizer_bpe_session::tokenize for one word, on token ids. */
  private bpe(word: string): number[] {
    const bytes = encoder.encode(word);
    if (this.settings.ignoreMerges) {
      let encoded = "";
      for (const b of bytes) encoded += BYTE_CHAR[b];
      const whole = this.table.id(encoded);
      if (whole >= 0) return [whole];
    }
    // Merging the lowest-ranked adjacent pair, the leftmost among equals, until none is ranked: what
    // llama.cpp's priority queue of bigrams does.
    const symbols = Array.from(bytes, (b) => this.byteIds[b] as number);
    for (;;) {
      let best = Number.POSITIVE_INFINITY;
      let at = -1;
      let merged = -1;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const slot = this.merges.find(symbols[i] as number, symbols[i + 1] as number);
        if (slot >= 0 && this.merges.rankAt(slot) < best) {
          best = this.merges.rankAt(slot);
          at = i;
          merged = this.merges.mergedAt(slot);
        }
      }
      if (at < 0) return symbols;
      symbols.splice(at, 2, merged);
    }
  }
}

/**
 * Lone surrogates become U+FFFD, as they do on the way into llama.cpp (N-API's UTF-8 conversion).
 * (String.prototype.isWellFormed and toWellFormed are in Node 20, not yet in the ES2023 library types.)
 */
function wellFormed(text: string): string {
  const t = text as unknown as { isWellFormed(): boolean; toWellFormed(): string };
  return t.isWellFormed() ? text : t.toWellFormed();
}

/** llama_detokenize's clean_up_tokenization_spaces passes, on bytes. */
function cleanSpaces(input: Uint8Array): Uint8Array {
  const SP = 0x20;
  const APOS = 0x27;
  const t = Uint8Array.from(input);
  // " ?", " !", " .", " ,": the space goes.
  let total = t.length ? 1 : 0;
  for (let i = 1; i < t.length; i++) {
    const x = t[i] as number;
    if (t[i - 1] === SP && (x === 0x3f || x === 0x21 || x === 0x2e || x === 0x2c)) total--;
    t[total++] = x;
  }
  // " ' ": both spaces go.
  const total2 = total;
  total = total ? 1 : 0;
  for (let i = 1; i < total2; i++) {
    const x = t[i] as number;
    if (x === APOS && i + 1 < total2 && t[i - 1] === SP && t[i + 1] === SP) {
      total--;
      t[++i] = 0;
    }
    t[total++] = x;
  }
  // " 's", " 'm", " 're", " 've": the space goes.
  const total3 = total;
  total = total ? 1 : 0;
  for (let i = 1; i < total3; i++) {
    const x = t[i] as number;
    if (t[i - 1] === SP && x === APOS && i + 1 < total3) {
      const x1 = t[i + 1] as number;
      if (x1 === 0x73 || x1 === 0x6d) total--;
      else if (i + 2 < total3) {
        const x2 = t[i + 2] as number;
        if ((x1 === 0x72 && x2 === 0x65) || (x1 === 0x76 && x2 === 0x65)) total--;
      }
    }
    t[total++] = x;
  }
  return t.subarray(0, total);
}
