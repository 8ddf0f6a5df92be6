/**
 * llama.cpp's hand-written pre-tokenizers for the byte-level BPE vocabularies served most (GPT-2,
 * Llama 3, Qwen 2/3), ported statement by statement from unicode.cpp (unicode_regex_split_custom_*),
 * so that words split where llama.cpp splits them, including where those functions differ from the
 * regular expressions they stand for.
 */
import { FLAGGED, LETTER, NUMBER, WHITESPACE } from "./unicode-classes.js";

export type PreTokenizer = "gpt2" | "llama3" | "qwen2";

const OUT = -1;
const CR = 0x0d;
const LF = 0x0a;
const SPACE = 0x20;
const APOSTROPHE = 0x27;
const c = (s: string) => s.charCodeAt(0);
const [S, T, M, D, R, E, V, L] = ["s", "t", "m", "d", "r", "e", "v", "l"].map(c) as [
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
];

/**
 * Splits `n` code points (`cps`, with their classes in `cls`) into words; calls `emit(end)` with the
 * end index of each word, in order.
 */
export function splitWords(
  kind: PreTokenizer,
  cps: Int32Array,
  cls: Uint8Array,
  n: number,
  lower: (cp: number) => number,
  emit: (end: number) => void,
): void {
  const cpt = (pos: number): number => (pos < n ? (cps[pos] as number) : OUT);
  const flags = (pos: number): number => (pos < n ? (cls[pos] as number) : 0);
  let prevEnd = 0;
  const add = (end: number): number => {
    const len = end - prevEnd;
    if (len > 0) emit(end);
    prevEnd = end;
    return len;
  };
  // The last rules of every pattern: \s+(?!\S) (a run of whitespace but its last, when more
  // follows), \s+, else the one code point alone. Returns the position after the word.
  const whitespaceOrOne = (pos: number, spaces: number): number => {
    const end =
      spaces > 1 && cpt(pos + spaces) !== OUT ? pos + spaces - 1 : spaces > 0 ? pos + spaces : pos + 1;
    add(end);
    return end;
  };
  const caseless = kind !== "gpt2";
  for (let pos = 0; pos < n; ) {
    const cp = cpt(pos);
    const f = flags(pos);

    // 's|'t|'re|'ve|'m|'ll|'d (case-insensitive but for GPT-2)
    if (cp === APOSTROPHE && pos + 1 < n) {
      const next = caseless ? lower(cpt(pos + 1)) : cpt(pos + 1);
      if (next === S || next === T || next === M || next === D) {
        pos += add(pos + 2);
        continue;
      }
      if (pos + 2 < n) {
        const nextNext = caseless ? lower(cpt(pos + 2)) : cpt(pos + 2);
        if (
          (next === R && nextNext === E) ||
          (next === V && nextNext === E) ||
          (next === L && nextNext === L)
        ) {
          pos += add(pos + 3);
          continue;
        }
      }
    }

    if (kind === "gpt2") {
      let f2 = cp === SPACE ? flags(pos + 1) : f;
      // <space>?\p{L}+
      if (f2 & LETTER) {
        pos += cp === SPACE ? 1 : 0;
        while (f2 & LETTER) f2 = flags(++pos);
        add(pos);
        continue;
      }
      // <space>?\p{N}+
      if (f2 & NUMBER) {
        pos += cp === SPACE ? 1 : 0;
        while (f2 & NUMBER) f2 = flags(++pos);
        add(pos);
        continue;
      }
      // <space>?[^\s\p{L}\p{N}]+
      if (!(f2 & (WHITESPACE | LETTER | NUMBER)) && f2 & FLAGGED) {
        pos += cp === SPACE ? 1 : 0;
        while (!(f2 & (WHITESPACE | LETTER | NUMBER)) && f2 & FLAGGED) f2 = flags(++pos);
        add(pos);
        continue;
      }
      let spaces = 0;
      while (flags(pos + spaces) & WHITESPACE) spaces++;
      pos = whitespaceOrOne(pos, spaces);
      continue;
    }

    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!(cp === CR || cp === LF || f & NUMBER)) {
      if (f & LETTER || flags(pos + 1) & LETTER) {
        pos++;
        while (flags(pos) & LETTER) pos++;
        add(pos);
        continue;
      }
    }

    if (f & NUMBER) {
      if (kind === "llama3") {
        // \p{N}{1,3}
        let ini = pos;
        while (flags(pos) & NUMBER) {
          if (++pos - ini >= 3) {
            add(pos);
            ini = pos;
          }
        }
        add(pos);
      } else {
        // \p{N}
        pos++;
        add(pos);
      }
      continue;
    }

    // <space>?[^\s\p{L}\p{N}]+[\r\n]*  (the first test reads the first code point's flags, as llama.cpp does)
    let f2 = cp === SPACE ? flags(pos + 1) : f;
    if (!(f2 & (WHITESPACE | LETTER | NUMBER)) && f & FLAGGED) {
      pos += cp === SPACE ? 1 : 0;
      while (!(f2 & (WHITESPACE | LETTER | NUMBER)) && f2 & FLAGGED) f2 = flags(++pos);
      let cp2 = cpt(pos);
      while (cp2 === CR || cp2 === LF) cp2 = cpt(++pos);
      add(pos);
      continue;
    }

    let spaces = 0;
    let lastEndROrN = 0;
    while (flags(pos + spaces) & WHITESPACE) {
      const cp2 = cpt(pos + spaces);
      if (cp2 === CR || cp2 === LF) lastEndROrN = pos + spaces + 1;
      spaces++;
    }
    // \s*[\r\n]+
    if (lastEndROrN > 0) {
      pos = lastEndROrN;
      add(pos);
      continue;
    }
    pos = whitespaceOrOne(pos, spaces);
  }
}
