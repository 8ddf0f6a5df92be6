/**
 * Ties the log-probabilities of sampled tokens to the text a generation emits. An engine reports
 * each token's piece (its bytes) and figures as it samples it; the text, though, is what the
 * detokenizer and the stop matcher release, which is not always the pieces: a character split across
 * tokens is released once complete, a vocabulary's clean-up may rewrite spaces, a forced flush writes
 * U+FFFD for an unfinished character, and a stop string ends the text inside a token. The consumer
 * (and the coordinator, which refuses anything else) needs the entries' bytes concatenated to be
 * exactly the text, chunk by chunk, so each chunk carries whole tokens:
 * - decoded(): the detokenizer released `text` for the tokens sampled since its last release; each
 *   gets its piece while the pieces spell the text, and the last one whatever the text has left.
 * - release(): the stop matcher let `text` out. It goes out only up to the last token boundary it
 *   reaches (and never inside a character), with the entries of those tokens; the rest waits.
 * - end(): the generation ended. Everything released goes out; after a stop string, the token it
 *   began in keeps only its bytes before it, and the tokens after are dropped.
 */
import { compareTop, LOGPROB_FLOOR } from "@darkbloom/protocol/logprobs";
import type { TokenLogprob, TopLogprob } from "./engine.js";

/** What an engine reports for a sampled token: its piece and the raw figures. */
export interface SampledLogprob {
  /** The token's piece (its bytes, control tokens rendered as nothing). */
  bytes: Uint8Array;
  logprob: number;
  /** The most likely tokens, in any order, possibly with repeated bytes. */
  top: TopLogprob[];
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const EMPTY = new Uint8Array();

export class LogprobAligner {
  /** Sampled, their text not released by the detokenizer yet. */
  private undecoded: SampledLogprob[] = [];
  /** Decoded, not yet out: their bytes are the text released for them. */
  private pending: TokenLogprob[] = [];
  /** Text the stop matcher released that has not gone out (it ends inside a token). */
  private held: Uint8Array = EMPTY;

  /** A token was sampled (before its text is decoded). */
  sampled(entry: SampledLogprob): void {
    this.undecoded.push(entry);
  }

  /** The detokenizer released `text` for every token sampled since its last release. */
  decoded(text: string): void {
    const bytes = encoder.encode(text);
    let at = 0;
    const last = this.undecoded.length - 1;
    for (const [i, sampled] of this.undecoded.entries()) {
      let piece: Uint8Array;
      if (i === last) piece = bytes.subarray(at);
      else {
        const n = sampled.bytes.byteLength;
        const spelled =
          at + n <= bytes.byteLength && Buffer.compare(bytes.subarray(at, at + n), sampled.bytes) === 0;
        piece = spelled ? bytes.subarray(at, at + n) : EMPTY;
      }
      at += piece.byteLength;
      this.pending.push(entryOf(sampled, piece));
    }
    this.undecoded = [];
  }

  /** The stop matcher released `text`: what can go out now (whole tokens), or undefined. */
  release(text: string): { text: string; entries: TokenLogprob[] } | undefined {
    if (text !== "") this.held = concat(this.held, encoder.encode(text));
    let covered = 0;
    let count = 0;
    let cut = 0;
    let cutCount = 0;
    for (const entry of this.pending) {
      const end = covered + entry.bytes.byteLength;
      if (end > this.held.byteLength) break;
      covered = end;
      count++;
      // Never inside a character: the next byte must begin one.
      if (covered === this.held.byteLength || (this.held[covered]! & 0xc0) !== 0x80) {
        cut = covered;
        cutCount = count;
      }
    }
    if (cutCount === 0) return undefined;
    return this.take(cut, cutCount);
  }

  /**
   * The generation ended (`stopped`: by a stop string, the text before it already released): what
   * goes out last, or undefined when nothing does.
   */
  end(stopped: boolean): { text: string; entries: TokenLogprob[] } | undefined {
    if (!stopped) {
      // Tokens with no text (a control token's) at the very end still count as sampled.
      for (const sampled of this.undecoded) this.pending.push(entryOf(sampled, EMPTY));
    }
    this.undecoded = [];
    let covered = 0;
    let count = 0;
    for (const entry of this.pending) {
      if (covered === this.held.byteLength && entry.bytes.byteLength > 0) break;
      const room = this.held.byteLength - covered;
      if (entry.bytes.byteLength > room) entry.bytes = entry.bytes.subarray(0, room);
      covered += entry.bytes.byteLength;
      count++;
    }
    if (count === 0 && this.held.byteLength === 0) return undefined;
    const out = this.take(this.held.byteLength, count);
    this.pending = [];
    return out;
  }

  private take(bytes: number, count: number): { text: string; entries: TokenLogprob[] } {
    const text = decoder.decode(this.held.subarray(0, bytes));
    this.held = this.held.subarray(bytes);
    return { text, entries: this.pending.splice(0, count) };
  }
}

/**
 * A sampled token's entry with the bytes its text got: figures floored and made binary32 (what the
 * record signs), alternatives in canonical order with each byte string once (the most likely).
 */
function entryOf(sampled: SampledLogprob, bytes: Uint8Array): TokenLogprob {
  const top: TopLogprob[] = sampled.top
    .map((t) => ({ bytes: t.bytes, logprob: figure(t.logprob) }))
    .sort((a, b) =>
      compareTop({ token: a.bytes, logprob: a.logprob }, { token: b.bytes, logprob: b.logprob }),
    );
  const seen = new Set<string>();
  const distinct = top.filter((t) => {
    const key = Buffer.from(t.bytes).toString("latin1");
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  return { bytes: new Uint8Array(bytes), logprob: figure(sampled.logprob), top: distinct };
}

function figure(value: number): number {
  return Math.fround(Number.isNaN(value) ? LOGPROB_FLOOR : Math.min(0, Math.max(LOGPROB_FLOOR, value)));
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.byteLength === 0) return b;
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}
