/**
 * How llama.cpp classifies a code point for pre-tokenization: letter, number, whitespace, and
 * whether any of its flags is set (the "other" branch of the pre-tokenizers tests that). The table
 * is llama.cpp's own (unicode-classes.data.ts, generated from the bundled source), not this Node's
 * ICU: the two disagree on code points assigned in different Unicode versions, and a count must
 * match the provider's llama.cpp exactly.
 */
import { CLASS_RUNS, CONTRACTION_LOWERCASE } from "./unicode-classes.data.js";

export const LETTER = 1;
export const NUMBER = 2;
export const WHITESPACE = 4;
/** Any llama.cpp flag set (its `as_uint() != 0`); out-of-range positions have none. */
export const FLAGGED = 8;

const CODE_POINTS = 0x110000;
let table: Uint8Array | undefined;

/** The class of every code point (1.1 MB, built on first use from about 4,000 runs). */
export function codePointClasses(): Uint8Array {
  if (table) return table;
  const t = new Uint8Array(CODE_POINTS);
  let at = 0;
  for (const line of CLASS_RUNS) {
    for (const run of line.split(",")) {
      const length = Number.parseInt(run.slice(0, -1), 36);
      t.fill(Number.parseInt(run.slice(-1), 16), at, at + length);
      at += length;
    }
  }
  if (at !== CODE_POINTS)
    throw new Error(`unicode-classes.data.ts covers ${at} code points, not ${CODE_POINTS}`);
  table = t;
  return t;
}

/** llama.cpp's unicode_tolower, for the letters the contraction rules compare ('s 't 're 've 'm 'll 'd). */
export function contractionLower(cp: number): number {
  return CONTRACTION_LOWERCASE.get(cp) ?? cp;
}
