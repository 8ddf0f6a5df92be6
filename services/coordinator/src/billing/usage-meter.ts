import type { ChunkPayload, Usage } from "@darkbloom/protocol/provider/v1";

/**
 * Trust reason codes for a provider whose token counts are not what it delivered. Part of the API
 * (RuntimeStatus.reasons, GET /v1/providers/attestation, metrics): add new ones, never rename.
 */
export const MeteringViolation = {
  /** More tokens claimed than the text delivered can hold (every token decodes to at least a byte). */
  tokensInflated: "usage_tokens_inflated",
  /** More text than the tokens claimed for it can decode to (or text carried with no tokens at all). */
  chunkOversized: "chunk_oversized",
  /** A choice went past the max_tokens the request was dispatched with. */
  maxTokensExceeded: "max_tokens_exceeded",
  /** A chunk for a choice the request did not ask for. */
  choiceOutOfRange: "choice_out_of_range",
  /** The final usage disagrees with the chunks (fewer tokens than already streamed, or more than the tail can hold). */
  usageMismatch: "usage_mismatch",
} as const;

export type MeteringViolationCode = (typeof MeteringViolation)[keyof typeof MeteringViolation];

export interface Violation {
  code: MeteringViolationCode;
  message: string;
}

/**
 * The longest text one token of any tokenizer we serve decodes to, in UTF-8 bytes. Vocabularies hold
 * long runs (spaces, "=", "-") but none near this; a provider whose text outgrows its token count by
 * more is sending text it did not generate, and the bound is what keeps a response's size tied to the
 * max_tokens it was reserved for.
 */
export const MAX_TOKEN_BYTES = 256;

/**
 * Tokens that legitimately carry no delivered text: control tokens that decode to nothing, and the
 * tokens whose text an engine holds back (a stop sequence being matched, an incomplete UTF-8
 * character) until a later chunk. A fixed allowance plus one token in TEXTLESS_TOKEN_RATIO.
 */
export const TEXTLESS_TOKEN_ALLOWANCE = 8;
export const TEXTLESS_TOKEN_RATIO = 16;

const utf8 = new TextEncoder();

export interface MeterLimits {
  /** Choices the request asked for (`n`). */
  choices: number;
  /** Completion tokens each choice may produce (the max_tokens dispatched). */
  maxTokens: number;
  /** UTF-8 bytes of the request's longest stop sequence (its tokens are counted, its text withheld). */
  maxStopBytes: number;
  /** The most prompt tokens the coordinator believes this prompt can tokenize to. */
  promptTokenBound: number;
}

/** Completion usage the coordinator accepted: what is shown to the consumer and what is charged. */
export interface MeteredUsage {
  promptTokens: number;
  completionTokens: number;
}

/**
 * The coordinator's own account of one response from one provider, from the text it actually
 * forwards. Without the model's tokenizer on the coordinator a token count cannot be recomputed
 * exactly, but it can be bounded from the text: every token decodes to at least one byte (so a claim
 * above the bytes delivered, beyond a small allowance for text-less tokens, is a lie) and to at most
 * MAX_TOKEN_BYTES (so text cannot ride on too few tokens, or none). A provider's claims are accepted
 * only inside those bounds and the max_tokens it was given; outside them the response is cut and the
 * provider marked with the violation's code. What is accepted is one usage: shown to the consumer,
 * signed by the provider, and charged.
 */
export class UsageMeter {
  /** Tokens claimed per choice, over the chunks accepted so far. */
  private readonly tokens: number[];
  /** UTF-8 bytes delivered per choice. */
  private readonly bytes: number[];
  /** Tokens over all accepted chunks (what a cut or cancelled stream is charged for). */
  delivered = 0;

  constructor(private readonly limits: MeterLimits) {
    this.tokens = new Array(limits.choices).fill(0);
    this.bytes = new Array(limits.choices).fill(0);
  }

  /**
   * Checks a chunk before it is forwarded. Returns a violation (the chunk must not be delivered) or
   * undefined (the chunk is accepted and counted).
   */
  chunk(payload: ChunkPayload): Violation | undefined {
    const i = payload.choiceIndex;
    if (!Number.isInteger(i) || i < 0 || i >= this.limits.choices) {
      return {
        code: MeteringViolation.choiceOutOfRange,
        message: `a chunk for choice ${i} of a request with ${this.limits.choices}`,
      };
    }
    const tokens = (this.tokens[i] as number) + payload.tokenCount;
    const bytes = (this.bytes[i] as number) + utf8.encode(payload.text).byteLength;
    if (tokens > this.limits.maxTokens) {
      return {
        code: MeteringViolation.maxTokensExceeded,
        message: `choice ${i} claimed ${tokens} tokens against max_tokens ${this.limits.maxTokens}`,
      };
    }
    // Checked over the whole choice, not per chunk: an engine may send a token's text with the next
    // chunk (held-back stop-sequence prefixes, split characters), so one chunk can be text-heavy or
    // token-heavy on its own.
    if (bytes > (tokens + 1) * MAX_TOKEN_BYTES) {
      return {
        code: MeteringViolation.chunkOversized,
        message: `choice ${i} delivered ${bytes} bytes for ${tokens} claimed tokens`,
      };
    }
    if (tokens > bytes + textlessAllowance(tokens)) {
      return {
        code: MeteringViolation.tokensInflated,
        message: `choice ${i} claimed ${tokens} tokens for ${bytes} bytes of text`,
      };
    }
    this.tokens[i] = tokens;
    this.bytes[i] = bytes;
    this.delivered += payload.tokenCount;
    return undefined;
  }

  /**
   * Checks the provider's final usage against what it streamed. The completion count may exceed the
   * streamed tokens only by each choice's withheld tail (the stop sequence's tokens, text-less tokens
   * at the end), and never go below them; the prompt count must be positive and within the bound the
   * reservation covered.
   */
  complete(usage: Usage | undefined): { usage: MeteredUsage } | { violation: Violation } {
    const { choices, maxTokens, maxStopBytes, promptTokenBound } = this.limits;
    const prompt = usage?.promptTokens ?? 0;
    const completion = usage?.completionTokens ?? 0;
    if (prompt < 1 || prompt > promptTokenBound) {
      return {
        violation: {
          code: MeteringViolation.usageMismatch,
          message: `prompt_tokens ${prompt} outside 1..${promptTokenBound} for the prompt sent`,
        },
      };
    }
    let tail = 0;
    for (let i = 0; i < choices; i++) {
      const streamed = this.tokens[i] as number;
      const bytes = this.bytes[i] as number;
      // What the choice may still claim without text: within its own text-less allowance, plus the
      // withheld stop sequence (at least a byte a token), never past max_tokens.
      const room = Math.max(0, bytes + textlessAllowance(streamed) - streamed) + maxStopBytes;
      tail += Math.min(room, maxTokens - streamed);
    }
    if (completion < this.delivered || completion > this.delivered + tail) {
      return {
        violation: {
          code: MeteringViolation.usageMismatch,
          message: `completion_tokens ${completion} outside ${this.delivered}..${this.delivered + tail} for the text delivered`,
        },
      };
    }
    return { usage: { promptTokens: prompt, completionTokens: completion } };
  }
}

function textlessAllowance(tokens: number): number {
  return TEXTLESS_TOKEN_ALLOWANCE + Math.ceil(tokens / TEXTLESS_TOKEN_RATIO);
}
