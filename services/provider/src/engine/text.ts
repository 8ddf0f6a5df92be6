/** Streaming text helpers: UTF-8-safe incremental detokenization and stop sequences across token boundaries. */

/** Anything that turns tokens into text (a LlamaModel qualifies). */
export interface Detokenizer {
  detokenize(tokens: readonly number[], specialTokens?: boolean, lastTokens?: readonly number[]): string;
}

const REPLACEMENT = "\uFFFD";
/** Tokens of left context passed to the detokenizer (SentencePiece models drop a leading space without it). */
const CONTEXT_TOKENS = 4;

/**
 * Turns a growing token list into text deltas. A token can end in the middle of a multi-byte UTF-8
 * character (byte-level BPE splits them); the detokenizer then yields U+FFFD, so the delta is held back
 * until a later token completes the character. Text is re-decoded only from the last emitted boundary.
 */
export class IncrementalDetokenizer {
  private readonly tokens: number[] = [];
  /** Start of the window being decoded. */
  private prefixOffset = 0;
  /** End of the part of the window already emitted. */
  private readOffset = 0;

  constructor(private readonly detokenizer: Detokenizer) {}

  get tokenCount(): number {
    return this.tokens.length;
  }

  /** Adds a token and returns the text it completes ("" while a character is still incomplete). */
  push(token: number): string {
    this.tokens.push(token);
    return this.take(false);
  }

  /** Everything not yet returned, even an incomplete trailing character (as U+FFFD). */
  flush(): string {
    return this.take(true);
  }

  private decode(end: number): string {
    const context = this.tokens.slice(Math.max(0, this.prefixOffset - CONTEXT_TOKENS), this.prefixOffset);
    return this.detokenizer.detokenize(this.tokens.slice(this.prefixOffset, end), false, context);
  }

  private take(force: boolean): string {
    if (this.readOffset === this.tokens.length) return "";
    const emitted = this.readOffset > this.prefixOffset ? this.decode(this.readOffset) : "";
    const full = this.decode(this.tokens.length);
    let delta: string;
    if (full.startsWith(emitted)) {
      if (!force && (full.length === emitted.length || full.endsWith(REPLACEMENT))) return "";
      delta = full.slice(emitted.length);
    } else {
      // The detokenizer rewrote text already emitted: llama.cpp cleans " ," into "," (and " 's", …)
      // for vocabularies that ask for it, so the window's text no longer starts with what went out.
      // What went out stands, and the new tokens add their own text: the text stays the tokens'
      // pieces, as a grammar matched them, and nothing after the rewrite is lost.
      delta = this.detokenizer.detokenize(this.tokens.slice(this.readOffset), false);
      if (!force && (delta === "" || delta.endsWith(REPLACEMENT))) return "";
    }
    this.prefixOffset = this.readOffset;
    this.readOffset = this.tokens.length;
    // Keep the window short: the next decode starts where this delta started.
    return delta;
  }
}

/**
 * Finds stop sequences in streamed text. Text that could be the start of a stop sequence is held back
 * until it is clearly not one, so a stop string split across tokens is never partly emitted.
 */
export class StopMatcher {
  private readonly stops: string[];
  private held = "";

  constructor(stops: readonly string[]) {
    this.stops = [...new Set(stops.filter((s) => s.length > 0))];
  }

  get holding(): string {
    return this.held;
  }

  /** Feeds text; returns what may be emitted now, and whether a stop sequence was reached (its text and anything after it are dropped). */
  push(text: string): { emit: string; stopped: boolean } {
    if (this.stops.length === 0) return { emit: text, stopped: false };
    this.held += text;
    let at = -1;
    for (const stop of this.stops) {
      const i = this.held.indexOf(stop);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    if (at >= 0) {
      const emit = this.held.slice(0, at);
      this.held = "";
      return { emit, stopped: true };
    }
    let keep = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, this.held.length); k > keep; k--) {
        if (this.held.endsWith(stop.slice(0, k))) {
          keep = k;
          break;
        }
      }
    }
    const emit = this.held.slice(0, this.held.length - keep);
    this.held = this.held.slice(this.held.length - keep);
    return { emit, stopped: false };
  }

  /** The held-back text, once the stream ends without a stop. */
  flush(): string {
    const text = this.held;
    this.held = "";
    return text;
  }
}

/**
 * Tokens whose text alone is not valid UTF-8 (it decodes with U+FFFD): the fragments of characters a
 * byte-level vocabulary splits across tokens. Decoding under a grammar bans them (the native core's
 * PartialCharacterTokens says why: llama.cpp's grammar reads fragments leniently, so the grammar could
 * accept text that is not what the consumer receives). One detokenize per token of the vocabulary.
 */
export function characterFragmentTokens(detokenizer: Detokenizer, vocabularySize: number): number[] {
  const fragments: number[] = [];
  for (let token = 0; token < vocabularySize; token++) {
    if (detokenizer.detokenize([token], false).includes(REPLACEMENT)) fragments.push(token);
  }
  return fragments;
}
