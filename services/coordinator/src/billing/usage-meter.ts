import { choiceCompletionTokens } from "@darkbloom/models";
import type { EmbeddingModel } from "@darkbloom/models/embeddings";
import type { GenerationInput } from "@darkbloom/models/input";
import type { ToolCallSyntax } from "@darkbloom/models/tools";
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
  /** The final usage is not what the text delivered counts to (or, without the tokenizer, outside its bounds). */
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
 * Sampled tokens that legitimately carry no delivered text: control tokens that decode to nothing,
 * the tokens of a stop sequence (matched, so withheld), and tokens whose text an engine holds back
 * (an incomplete UTF-8 character) until a later chunk. A fixed allowance plus one token in
 * TEXTLESS_TOKEN_RATIO.
 */
export const TEXTLESS_TOKEN_ALLOWANCE = 8;
export const TEXTLESS_TOKEN_RATIO = 16;

const utf8 = new TextEncoder();

export interface MeterLimits {
  /** Choices the request asked for (`n`). */
  choices: number;
  /** Completion tokens each choice may produce (the max_tokens dispatched). */
  maxTokens: number;
  /** The most prompt tokens the coordinator believes this prompt can tokenize to. */
  promptTokenBound: number;
}

/** The model's tokenizer and chat template on the coordinator (a catalog vocabulary): counts are then exact. */
export interface TokenCounter {
  countPrompt(input: GenerationInput): Promise<number>;
  /** The texts' tokens, each text counted on its own, summed. */
  countTexts(texts: readonly string[]): Promise<number>;
  /**
   * The same counts made at once, where the counter runs on the event loop (the port): the serving
   * path then checks usage without a promise between the count and the verdict.
   */
  countPromptNow?(input: GenerationInput): number;
  countTextsNow?(texts: readonly string[]): number;
  /**
   * Set when this counter is the TypeScript port of llama.cpp's tokenizer (FastModelTokenizer):
   * llama.cpp itself, whose count stands wherever the two differ, so that a flaw in the port can
   * never cut an honest provider (see confirmedCount).
   */
  readonly reference?: ReferenceCounter;
  /**
   * How the model writes a function call (its chat template's syntax, from the vocabulary): what a
   * request with `tools` is split with. Absent where the template has none.
   */
  toolSyntax?: ToolCallSyntax;
  /** The model's vectors when it is an embedding model (its vocabulary's GGUF declares pooling). */
  embeddingModel?: EmbeddingModel;
}

/** llama.cpp's counter behind a port, and what to do when the port is found to differ from it. */
export interface ReferenceCounter {
  counter: TokenCounter;
  /** The port counted differently from llama.cpp: it must not be trusted with this vocabulary again. */
  differed(detail: string): void;
}

/**
 * The completion tokens of a response's choices (each text counted on its own, and each at most
 * max_tokens: choiceCompletionTokens, the rule the provider counts by too).
 */
export async function countCompletion(
  counter: Pick<TokenCounter, "countTexts">,
  texts: readonly string[],
  maxTokens: number,
): Promise<number> {
  return cappedTotal(await Promise.all(texts.map((text) => counter.countTexts([text]))), maxTokens);
}

/** Choices' counts summed, each at most max_tokens. */
function cappedTotal(counts: readonly number[], maxTokens: number): number {
  return counts.reduce((sum, n) => sum + choiceCompletionTokens(n, maxTokens), 0);
}

/**
 * The counts a provider's usage is checked against. Where the provider disagrees with a count made
 * by the port, llama.cpp counts again and its figure is the one used (reported as `recounted`, and
 * the port retired for the vocabulary when the two tokenizers differ). A provider lying about its
 * usage costs the coordinator one recount; what it claims never replaces either count.
 */
export async function confirmedCount(
  counter: TokenCounter,
  input: GenerationInput,
  texts: readonly string[],
  maxTokens: number,
  usage: Usage | undefined,
  counted: CountedUsage,
): Promise<{ counted: CountedUsage; recounted: boolean }> {
  const reference = counter.reference;
  const agrees =
    usage !== undefined &&
    usage.promptTokens === counted.promptTokens &&
    usage.completionTokens === counted.completionTokens;
  if (agrees || reference === undefined) return { counted, recounted: false };
  const [promptTokens, completionTokens] = await Promise.all([
    reference.counter.countPrompt(input),
    countCompletion(reference.counter, texts, maxTokens),
  ]);
  if (promptTokens !== counted.promptTokens || completionTokens !== counted.completionTokens) {
    reference.differed(
      `the port counted ${counted.promptTokens}+${counted.completionTokens} tokens, llama.cpp ${promptTokens}+${completionTokens}`,
    );
  }
  return { counted: { promptTokens, completionTokens }, recounted: true };
}

/** The coordinator's own counts of a response: its prompt and the text delivered. */
export interface CountedUsage {
  promptTokens: number;
  completionTokens: number;
}

/** Completion usage the coordinator accepted: what is shown to the consumer and what is charged. */
export interface MeteredUsage {
  promptTokens: number;
  completionTokens: number;
}

/**
 * The coordinator's own account of one response from one provider, from the text it forwards.
 *
 * Usage is defined by the text: `completion_tokens` is what the model's tokenizer makes of each
 * choice's delivered text, at most max_tokens a choice (choiceCompletionTokens: text that
 * re-tokenizes into more is not billed past what the consumer allowed), `prompt_tokens` what the
 * chat template renders the request to. When the catalog holds the model's vocabulary
 * (catalog/catalog-tokenizers.ts) the coordinator counts both itself with llama.cpp's tokenizer, the
 * provider's engine counts with the same code, and any other figure is refused: the provider's usage
 * must equal the count.
 *
 * Without a vocabulary the counts can only be bounded, and the bounds are the cap on what a provider
 * can claim: every token decodes to at least one byte and at most MAX_TOKEN_BYTES, so a choice's
 * count lies between its bytes / MAX_TOKEN_BYTES and its bytes (plus one token a choice for a
 * tokenizer's leading-space marker), and a prompt's below promptTokenBound. A liar can inflate up to
 * the byte count (English is about four bytes a token), which is why every catalog model should have
 * its vocabulary.
 *
 * Chunks carry the tokens the engine sampled for their text. They are checked as they arrive, before
 * anything is forwarded, over the whole choice: no more than max_tokens, no more than the text can
 * hold beyond a small allowance for text-less tokens, and no more text than the tokens can decode to.
 * Outside any bound the response is cut and the provider marked with the violation's code.
 */
export class UsageMeter {
  /** Tokens claimed per choice, over the chunks accepted so far. */
  private readonly tokens: number[];
  /** UTF-8 bytes delivered per choice. */
  private readonly bytes: number[];
  /** Each choice's text as accepted (what the consumer receives, and what the signature covers). */
  readonly texts: string[];
  /** Chunks accepted so far, and how many there were when the texts were last counted. */
  private accepted = 0;
  private countedAt = -1;
  private counting: Promise<number> | undefined;

  constructor(
    private readonly limits: MeterLimits,
    private readonly counter?: Pick<TokenCounter, "countTexts" | "countTextsNow">,
  ) {
    this.tokens = new Array(limits.choices).fill(0);
    this.bytes = new Array(limits.choices).fill(0);
    this.texts = new Array(limits.choices).fill("");
  }

  /** Whether counts are the coordinator's own (the model's tokenizer), not only bounded. */
  get counted(): boolean {
    return this.counter !== undefined;
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
    this.texts[i] += payload.text;
    this.accepted++;
    return undefined;
  }

  /**
   * Completion tokens of what was delivered so far, for a response that did not complete (cut,
   * failed, cancelled): counted when the tokenizer is here, else (or when counting fails) the sampled
   * tokens claimed, capped by the bytes (never more than the text can be).
   */
  async delivered(): Promise<number> {
    if (this.counter) {
      try {
        return await this.countDelivered();
      } catch {
        // counted by the bounds below
      }
    }
    return this.claimedWithinBytes();
  }

  /**
   * The tokenizer's count of the texts so far when the counter can count at once (the port), else
   * undefined (use countDelivered()).
   */
  countDeliveredNow(): number | undefined {
    const counter = this.counter;
    if (counter?.countTextsNow === undefined) return undefined;
    const countNow = counter.countTextsNow.bind(counter);
    try {
      return cappedTotal(
        this.texts.map((text) => countNow([text])),
        this.limits.maxTokens,
      );
    } catch {
      return undefined; // countDelivered() tries again, and reports a failure
    }
  }

  /** The tokenizer's count of the texts so far, counted once per state of the texts. */
  countDelivered(): Promise<number> {
    if (!this.counter) return Promise.reject(new Error("no tokenizer"));
    if (this.countedAt !== this.accepted || this.counting === undefined) {
      this.countedAt = this.accepted;
      this.counting = countCompletion(this.counter, [...this.texts], this.limits.maxTokens);
    }
    return this.counting;
  }

  private claimedWithinBytes(): number {
    let sum = 0;
    for (let i = 0; i < this.limits.choices; i++) {
      const bytes = this.bytes[i] as number;
      sum += Math.min(this.tokens[i] as number, bytes > 0 ? bytes + 1 : 0);
    }
    return sum;
  }

  /**
   * Checks the provider's final usage against the text delivered: equal to the coordinator's counts
   * (`counted`: the prompt's, and countDelivered()) when it has the tokenizer, else (or when
   * counting failed) within the bounds the text sets.
   */
  complete(
    usage: Usage | undefined,
    counted?: CountedUsage,
  ): { usage: MeteredUsage } | { violation: Violation } {
    const prompt = usage?.promptTokens ?? 0;
    const completion = usage?.completionTokens ?? 0;
    const mismatch = (message: string) => ({
      violation: { code: MeteringViolation.usageMismatch, message },
    });
    if (counted !== undefined) {
      if (prompt !== counted.promptTokens) {
        return mismatch(`prompt_tokens ${prompt}; the prompt is ${counted.promptTokens} tokens`);
      }
      if (completion !== counted.completionTokens) {
        return mismatch(
          `completion_tokens ${completion}; the text delivered is ${counted.completionTokens} tokens`,
        );
      }
      return { usage: { promptTokens: prompt, completionTokens: completion } };
    }
    if (prompt < 1 || prompt > this.limits.promptTokenBound) {
      return mismatch(
        `prompt_tokens ${prompt} outside 1..${this.limits.promptTokenBound} for the prompt sent`,
      );
    }
    let least = 0;
    let most = 0;
    for (const bytes of this.bytes) {
      least += choiceCompletionTokens(Math.ceil(bytes / MAX_TOKEN_BYTES), this.limits.maxTokens);
      most += choiceCompletionTokens(bytes > 0 ? bytes + 1 : 0, this.limits.maxTokens);
    }
    if (completion < least || completion > most) {
      return mismatch(`completion_tokens ${completion} outside ${least}..${most} for the text delivered`);
    }
    return { usage: { promptTokens: prompt, completionTokens: completion } };
  }
}

function textlessAllowance(tokens: number): number {
  return TEXTLESS_TOKEN_ALLOWANCE + Math.ceil(tokens / TEXTLESS_TOKEN_RATIO);
}
