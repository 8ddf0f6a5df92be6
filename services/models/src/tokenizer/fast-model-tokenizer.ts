/**
 * ModelTokenizer's counts without llama.cpp: the same chat-template rendering (node-llama-cpp's
 * chat wrappers, which are plain TypeScript) over ByteLevelBpe, the exact port of llama.cpp's
 * byte-level BPE. It runs on the event loop in microseconds a count, where a worker thread costs a
 * message each way and llama.cpp's own tokenizer several times the time. Built from a
 * VocabularyDescription (what llama.cpp derived at load); vocabularies it cannot reproduce exactly
 * are refused with the reason, and are counted by llama.cpp as before.
 */
import type { ChatWrapper, Token, Tokenizer } from "node-llama-cpp";
import { countChatMlPrompt, isChatMl, type SegmentCounter } from "../chat/chatml-count.js";
import type { ChatMessage, GenerationInput } from "../chat/generation-input.js";
import {
  embeddingBounds,
  type PromptVocabulary,
  renderPromptTokens,
  resolveChatWrapperOf,
} from "../chat/prompt.js";
import { ByteLevelBpe, byteLevelSupport, TokenAttr } from "./bpe/byte-level-bpe.js";
import type { VocabularyDescription } from "./vocabulary-description.js";

/** Template segments whose tokens are kept. */
const TEMPLATED_CACHE_LIMIT = 256;

/** How recent tokens help detokenize (node-llama-cpp's maxRecentDetokenizerTokens). */
const MAX_RECENT_DETOKENIZER_TOKENS = 3;

function leadingSpaces(text: string): number {
  let n = 0;
  while (n < text.length && text[n] === " ") n++;
  return n;
}

/**
 * Each token's piece as llama_token_to_piece writes it (control tokens as nothing, as in text) from
 * the vocabulary alone, or undefined where the port does not read the vocabulary (not byte-level
 * BPE): the bytes a token's log-probability entry shows, for a core that has no vocabulary of its
 * own (MLX).
 */
export function vocabularyPieces(
  description: VocabularyDescription,
): ((token: number) => Uint8Array) | undefined {
  if (FastModelTokenizer.unsupported(description) !== undefined) return undefined;
  // Built on first use: only requests that ask for log-probabilities need it.
  let bpe: ByteLevelBpe | undefined;
  return (token) => {
    bpe ??= new ByteLevelBpe(description.vocabulary);
    return bpe.piece(token, false);
  };
}

export class FastModelTokenizer {
  private readonly vocabulary: PromptVocabulary;
  /** Whether chat prompts are counted by countChatMlPrompt (without building them). */
  private readonly chatMl: boolean;

  private constructor(
    private readonly bpe: ByteLevelBpe,
    readonly wrapper: ChatWrapper,
    tokenizer: Tokenizer,
    private readonly segments: SegmentCounter,
    description: VocabularyDescription,
  ) {
    this.chatMl = isChatMl(wrapper);
    const bos = description.builtin.bos as Token | undefined;
    this.vocabulary = {
      tokenizer,
      bos,
      prependBos: description.prependBos,
      ...embeddingBounds(description.type, {
        bos,
        eos: description.builtin.eos as Token | undefined,
        sep: description.builtin.sep as Token | undefined,
        prependBos: description.prependBos,
        appendEos: description.appendEos,
      }),
    };
  }

  /** The reason a vocabulary cannot be counted exactly here, or undefined when it can. */
  static unsupported(description: VocabularyDescription): string | undefined {
    if (description.type !== "bpe") return `llama.cpp vocabulary type ${description.type} has no port`;
    const support = byteLevelSupport(description.vocabulary);
    return typeof support === "string" ? support : undefined;
  }

  /** The port of the described vocabulary; throws with the reason where it has none. */
  static create(description: VocabularyDescription): FastModelTokenizer {
    const reason = FastModelTokenizer.unsupported(description);
    if (reason) throw new Error(`no exact tokenizer port: ${reason}`);
    const bpe = new ByteLevelBpe(description.vocabulary);
    const { tokenizer, segments } = makeTokenizer(bpe, description);
    const wrapper = resolveChatWrapperOf({
      fileInfo: description.fileInfo,
      tokenizer,
      bosString: description.builtin.bosString,
    });
    if (wrapper.wrapperName !== description.wrapperName) {
      throw new Error(
        `no exact tokenizer port: the chat template resolves to ${wrapper.wrapperName} here and ${description.wrapperName} in llama.cpp`,
      );
    }
    return new FastModelTokenizer(bpe, wrapper, tokenizer, segments, description);
  }

  /** Prompt tokens: ModelTokenizer.countPrompt's figure. */
  countPrompt(input: GenerationInput): number {
    // The shortcut renders plain conversations; functions and calls go through the wrapper.
    if (input.kind === "chat" && this.chatMl && input.tools === undefined && !hasToolTurns(input.messages))
      return countChatMlPrompt(input.messages, this.segments);
    return renderPromptTokens(this.vocabulary, this.wrapper, input).length;
  }

  /** Prompt tokens as the chat wrapper renders them, never by a shortcut (tests compare the two). */
  countRenderedPrompt(input: GenerationInput): number {
    return renderPromptTokens(this.vocabulary, this.wrapper, input).length;
  }

  /** Completion tokens of a choice's text: ModelTokenizer.countText's figure. */
  countText(text: string): number {
    return this.bpe.count(text);
  }

  /** The tokens llama.cpp makes of `text` (tests compare these). */
  tokenize(text: string, special: boolean): Token[] {
    return this.bpe.tokenize(text, special) as Token[];
  }
}

/**
 * A node-llama-cpp Tokenizer over the port: LlamaModel.tokenize, detokenize, isSpecialToken and
 * isEogToken, with the leading-space workarounds LlamaText applies to every segment after the first.
 */
function makeTokenizer(
  bpe: ByteLevelBpe,
  d: VocabularyDescription,
): { tokenizer: Tokenizer; segments: SegmentCounter } {
  const b = d.builtin;
  const eog = new Set(d.eog);
  const raw = (text: string, special: boolean): number[] => bpe.tokenize(text, special);
  // Text tokenized with special tokens is the chat template's own (the same few segments in every
  // prompt), and the workaround tokenizes each segment with a prefix and detokenizes it again: its
  // results are kept (bounded), as is the workaround's "\n".
  const templated = new Map<string, number[]>();
  const newline = { true: raw("\n", true), false: raw("\n", false) };
  const detokenize = (tokens: readonly Token[], special = false, lastTokens?: readonly Token[]): string => {
    if (tokens.length === 0) return "";
    const ids = tokens as readonly number[];
    if (lastTokens == null || lastTokens.length === 0) return bpe.detokenize(ids, special);
    const added = (lastTokens as readonly number[]).slice(-MAX_RECENT_DETOKENIZER_TOKENS);
    const addedText = bpe.detokenize(added, special);
    if (addedText === "") return bpe.detokenize(ids, special);
    const text = bpe.detokenize([...added, ...ids], special);
    if (text.startsWith(addedText)) return text.slice(addedText.length);
    return bpe.detokenize(ids, special);
  };
  const tokenize = (
    text: string,
    special: boolean | "builtin" = false,
    options?: "trimLeadingSpace",
  ): number[] => {
    if (special !== true) return uncached(text, special, options);
    return templatedTokens(text, options).slice();
  };
  /** The tokens of template text (special), kept: callers copy them before handing them out. */
  const templatedTokens = (text: string, options?: "trimLeadingSpace"): readonly number[] => {
    const key = options === "trimLeadingSpace" ? `t${text}` : `s${text}`;
    let tokens = templated.get(key);
    if (!tokens) {
      tokens = uncached(text, true, options);
      if (templated.size >= TEMPLATED_CACHE_LIMIT) templated.clear();
      templated.set(key, tokens);
    }
    return tokens;
  };
  const uncached = (text: string, special: boolean | "builtin", options?: "trimLeadingSpace"): number[] => {
    if (text === "") return [];
    if (special === "builtin") {
      const id = { BOS: b.bos, EOS: b.eos, NL: b.nl, EOT: b.eot, SEP: b.sep }[text];
      if (!(text in { BOS: 1, EOS: 1, NL: 1, EOT: 1, SEP: 1 }))
        throw new Error(`Unknown builtin special token: ${text}`);
      return id === undefined ? [] : [id];
    }
    if (options === "trimLeadingSpace") {
      // LlamaModel.tokenize's workaround, step by step.
      const workaroundTokens = special ? newline.true : newline.false;
      if (special) {
        const textLeadingSpaces = leadingSpaces(text);
        const [token, tokenString] =
          b.bos !== undefined && b.bosString !== undefined
            ? [b.bos, b.bosString]
            : b.eos !== undefined && b.eosString !== undefined
              ? [b.eos, b.eosString]
              : b.nl !== undefined && b.nlString !== undefined
                ? [b.nl, b.nlString]
                : b.eot !== undefined && b.eotString !== undefined
                  ? [b.eot, b.eotString]
                  : [undefined, undefined];
        if (token !== undefined && tokenString !== undefined) {
          const tokens = raw(tokenString + text, true);
          const at = tokens.indexOf(token);
          if (at >= 0 && at <= 1) {
            tokens.splice(0, at + 1);
            if (leadingSpaces(bpe.detokenize(tokens, true)) === textLeadingSpaces) return tokens;
          }
        }
        if (text.startsWith("\n")) {
          const tokens = raw(text, true);
          if (bpe.detokenize(tokens, true).startsWith("\n")) return tokens;
        }
        const tokens = raw(`\n${text}`, true);
        if (workaroundTokens.length > 0 && workaroundTokens.every((t, i) => tokens[i] === t)) {
          tokens.splice(0, workaroundTokens.length);
          if (leadingSpaces(bpe.detokenize(tokens, true)) === textLeadingSpaces) return tokens;
        }
      } else {
        if (text.startsWith("\n")) {
          const tokens = raw(text, false);
          if (bpe.detokenize(tokens, false).startsWith("\n")) return tokens;
        }
        const tokens = raw(`\n${text}`, false);
        if (workaroundTokens.length > 0 && workaroundTokens.every((t, i) => tokens[i] === t)) {
          tokens.splice(0, workaroundTokens.length);
          return tokens;
        }
      }
    }
    return raw(text, special === true);
  };
  const isEogToken = (token: Token): boolean => eog.has(token as number);
  const isSpecialToken = (token: Token): boolean => {
    if (bpe.attributesOf(token as number) & TokenAttr.control || isEogToken(token)) return true;
    if (detokenize([token], false) === "") return detokenize([token], true) !== "";
    return false;
  };
  const segments: SegmentCounter = {
    segment(text, special, trimLeadingSpace) {
      const options = trimLeadingSpace ? "trimLeadingSpace" : undefined;
      if (text === "") return 0;
      return special ? templatedTokens(text, options).length : uncached(text, false, options).length;
    },
    bos: () => (b.bos === undefined ? 0 : 1),
  };
  const tokenizer = Object.assign(tokenize, { detokenize, isSpecialToken, isEogToken });
  return { tokenizer: tokenizer as unknown as Tokenizer, segments };
}

function hasToolTurns(messages: readonly ChatMessage[]): boolean {
  return messages.some((m) => m.toolCalls !== undefined || m.role === "tool");
}
