/** Turns a GenerationInput into prompt tokens with the model's chat template, plus the template's stop triggers. */
import {
  type ChatHistoryItem,
  type ChatWrapper,
  GeneralChatWrapper,
  type GgufFileInfo,
  type Llama,
  type LlamaModel,
  type LlamaText,
  resolveChatWrapper,
  SpecialToken,
  SpecialTokensText,
  type Token,
  type Tokenizer,
} from "node-llama-cpp";
import type { ChatMessage, GenerationInput } from "./generation-input.js";

export interface RenderedPrompt {
  tokens: Token[];
  /** Tokens that end generation besides the model's end-of-generation tokens (from the chat template). */
  stopTokens: Set<Token>;
  /** Plain-text stop triggers from the chat template (not emitted, like request stops). */
  stopStrings: string[];
}

/**
 * What rendering a prompt needs of a vocabulary: a node-llama-cpp tokenizer (llama.cpp's, or the
 * coordinator's exact port of it) and the beginning-of-sequence token.
 */
export interface PromptVocabulary {
  tokenizer: Tokenizer;
  bos: Token | undefined;
  /** Whether llama.cpp puts BOS before a raw prompt (the vocabulary's add_bos). */
  prependBos: boolean;
}

/** A loaded model's prompt vocabulary. */
export function promptVocabularyOf(model: LlamaModel): PromptVocabulary {
  return {
    tokenizer: model.tokenizer,
    bos: model.tokens.bos ?? undefined,
    prependBos: model.tokens.shouldPrependBosToken,
  };
}

/** What resolving a model's chat wrapper reads. */
export interface ChatWrapperSource {
  fileInfo: GgufFileInfo;
  tokenizer: Tokenizer;
  bosString: string | null | undefined;
  llama?: Llama;
}

/**
 * Resolves the chat wrapper for a model from its GGUF metadata (chat template, name, architecture).
 * Settings that would inject run-time values (today's date in Llama 3.1+ system preambles, tool
 * instructions) are turned off so a prompt always renders the same tokens. The file name is not
 * consulted: the coordinator resolves the same wrapper from a vocabulary-only copy of the file under
 * another name, and both must render the same prompt.
 */
export function resolveChatWrapperOf(source: ChatWrapperSource): ChatWrapper {
  const noPreamble = { cuttingKnowledgeDate: null, todayDate: null, noToolInstructions: true };
  const architecture = source.fileInfo.metadata?.general?.architecture;
  return (
    resolveChatWrapper({
      bosString: source.bosString,
      ...(architecture ? { architecture } : {}),
      fileInfo: source.fileInfo,
      tokenizer: source.tokenizer,
      ...(source.llama ? { llama: source.llama } : {}),
      warningLogs: false,
      customWrapperSettings: { "llama3.1": noPreamble, "llama3.2-lightweight": noPreamble },
    }) ?? new GeneralChatWrapper()
  );
}

/** The chat wrapper of a loaded model. */
export function resolveModelChatWrapper(model: LlamaModel, llama: Llama): ChatWrapper {
  return resolveChatWrapperOf({
    fileInfo: model.fileInfo,
    tokenizer: model.tokenizer,
    bosString: model.tokens.bosString,
    llama,
  });
}

function toHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = [];
  for (const m of messages) {
    switch (m.role) {
      case "system":
      case "developer":
        history.push({ type: "system", text: m.content });
        break;
      case "assistant":
        history.push({ type: "model", response: [m.content] });
        break;
      default:
        // user, and tool/function results (text only in this contract) are user turns.
        history.push({ type: "user", text: m.content });
    }
  }
  return history;
}

function triggerToStop(trigger: LlamaText, vocabulary: PromptVocabulary, out: RenderedPrompt): void {
  const values = trigger.values;
  if (values.length === 0) return;
  if (values.every((v) => typeof v === "string")) {
    const text = values.join("");
    if (text.length > 0) out.stopStrings.push(text);
    return;
  }
  if (values.length === 1 && (values[0] instanceof SpecialToken || values[0] instanceof SpecialTokensText)) {
    const tokens = trigger.tokenize(vocabulary.tokenizer);
    if (tokens.length === 1) out.stopTokens.add(tokens[0]!);
  }
}

/** The prompt's tokens and the template's stop triggers (what the engine needs). */
export function renderPrompt(
  vocabulary: PromptVocabulary,
  wrapper: ChatWrapper,
  input: GenerationInput,
): RenderedPrompt {
  return render(vocabulary, wrapper, input, true);
}

/** The prompt's tokens only (what a count needs): the same tokens, without resolving the triggers. */
export function renderPromptTokens(
  vocabulary: PromptVocabulary,
  wrapper: ChatWrapper,
  input: GenerationInput,
): Token[] {
  return render(vocabulary, wrapper, input, false).tokens;
}

function render(
  vocabulary: PromptVocabulary,
  wrapper: ChatWrapper,
  input: GenerationInput,
  withTriggers: boolean,
): RenderedPrompt {
  const out: RenderedPrompt = { tokens: [], stopTokens: new Set(), stopStrings: [] };
  if (input.kind === "text") {
    // Raw text: never parse special-token markup out of user text.
    const tokens = vocabulary.tokenizer(input.prompt, false);
    const bos = vocabulary.bos;
    if (bos !== undefined && vocabulary.prependBos && tokens[0] !== bos) tokens.unshift(bos);
    out.tokens = tokens;
    return out;
  }
  const history = toHistory(input.messages);
  if (history.at(-1)?.type !== "model") history.push({ type: "model", response: [] });
  const state = wrapper.generateContextState({ chatHistory: history });
  out.tokens = state.contextText.tokenize(vocabulary.tokenizer);
  if (withTriggers)
    for (const trigger of state.stopGenerationTriggers) triggerToStop(trigger, vocabulary, out);
  return out;
}
