import type { SignedLogprob, SignedTopLogprob } from "@darkbloom/protocol/logprobs";
import { compareTop, LOGPROB_FLOOR } from "@darkbloom/protocol/logprobs";
import { MAX_TOKEN_BYTES } from "../billing/usage-meter.js";

/** The untrust code of a provider whose log-probabilities break what a model's could be. */
export const LOGPROBS_INVALID = "logprobs_invalid";

/** Float rounding the probabilities of the alternatives may sum past 1 by. */
const SUM_SLACK = 1e-3;

const encoder = new TextEncoder();

/**
 * A response's token entries, per choice, as its chunks bring them. Without the model nobody can
 * say a figure is wrong, but a provider's entries are still held to everything a model's must be
 * (checkChunk), and to the text they come with: their bytes concatenated are exactly the chunk's
 * text, so what the consumer reads token by token is what it reads as content, and what the
 * signature covers twice agrees. Each choice has at most max_tokens entries (what bounds the
 * response's size; every token sampled has one, and no more are sampled).
 */
export class LogprobsCollector {
  readonly choices: SignedLogprob[][];

  constructor(
    /** The alternatives per token the request asked for. */
    private readonly top: number,
    n: number,
    private readonly maxTokens: number,
  ) {
    this.choices = Array.from({ length: n }, () => []);
  }

  /** Keeps a chunk's entries, or says why they cannot be a model's (nothing is kept then). */
  chunk(choiceIndex: number, text: string, entries: readonly SignedLogprob[]): string | undefined {
    const choice = this.choices[choiceIndex];
    if (choice === undefined) return undefined; // an invented choice: the meter refuses it
    if (choice.length + entries.length > this.maxTokens) {
      return `choice ${choiceIndex} has more than max_tokens (${this.maxTokens}) logprobs entries`;
    }
    const problem = checkChunk(text, entries, this.top);
    if (problem !== undefined) return `choice ${choiceIndex}: ${problem}`;
    choice.push(...entries);
    return undefined;
  }
}

/**
 * Why a chunk's entries cannot be what a model's raw distribution gives, or undefined. Each figure
 * is a binary32 log-probability in [-9999, 0]; a token is at most MAX_TOKEN_BYTES long; at most
 * `top` alternatives, in canonical order with distinct bytes (so that the legacy format's object
 * reads back), whose probabilities sum to at most 1; the sampled token no likelier than the most
 * likely one. The entries' bytes concatenated are the text's.
 */
export function checkChunk(text: string, entries: readonly SignedLogprob[], top: number): string | undefined {
  const textBytes = encoder.encode(text);
  let at = 0;
  for (const [i, e] of entries.entries()) {
    const bad =
      figureProblem(e) ?? (e.top.length > top ? `has ${e.top.length} alternatives, over ${top}` : undefined);
    if (bad !== undefined) return `token ${i} ${bad}`;
    let sum = 0;
    for (const [k, t] of e.top.entries()) {
      const alt = figureProblem(t);
      if (alt !== undefined) return `token ${i}'s alternative ${k} ${alt}`;
      if (k > 0 && compareTop(e.top[k - 1]!, t) >= 0) {
        return `token ${i}'s alternatives are not in order, each token once`;
      }
      sum += Math.exp(t.logprob);
    }
    if (sum > 1 + SUM_SLACK) return `token ${i}'s alternatives have probabilities summing to ${sum}`;
    if (e.top.length > 0 && e.logprob > e.top[0]!.logprob) {
      return `token ${i} is likelier (${e.logprob}) than the most likely token (${e.top[0]!.logprob})`;
    }
    const end = at + e.token.byteLength;
    if (end > textBytes.byteLength || Buffer.compare(textBytes.subarray(at, end), e.token) !== 0) {
      return `token ${i}'s bytes are not the chunk's text at byte ${at}`;
    }
    at = end;
  }
  if (at !== textBytes.byteLength) {
    return `the tokens spell ${at} of the chunk's ${textBytes.byteLength} bytes of text`;
  }
  return undefined;
}

function figureProblem(e: SignedTopLogprob): string | undefined {
  const v = e.logprob;
  if (!Number.isFinite(v) || v > 0 || v < LOGPROB_FLOOR || Math.fround(v) !== v) {
    return `has logprob ${v}, not a binary32 value in [${LOGPROB_FLOOR}, 0]`;
  }
  if (e.token.byteLength > MAX_TOKEN_BYTES) return `is ${e.token.byteLength} bytes long`;
  return undefined;
}
