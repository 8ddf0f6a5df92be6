/** Turns a GenerationInput into prompt tokens with the model's chat template, plus the template's stop triggers. */
import {
  type ChatHistoryItem,
  type ChatModelFunctions,
  type ChatModelResponse,
  type ChatWrapper,
  type GbnfJsonSchema,
  GeneralChatWrapper,
  type GgufFileInfo,
  type Llama,
  type LlamaModel,
  LlamaText,
  resolveChatWrapper,
  SpecialToken,
  SpecialTokensText,
  type Token,
  type Tokenizer,
} from "node-llama-cpp";
import type { ChatMessage, GenerationInput, ToolDefinition } from "./generation-input.js";

type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

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
  /**
   * The tokens llama.cpp puts around an embedding input (node-llama-cpp's embedding context adds
   * them by the vocabulary's type and its add_bos / add_eos): an embedding model pools the hidden
   * state of its end token (Qwen3-Embedding's last-token pooling reads the EOS appended here).
   */
  embeddingStart: Token | undefined;
  embeddingEnd: Token | undefined;
}

/** A loaded model's prompt vocabulary. */
export function promptVocabularyOf(model: LlamaModel): PromptVocabulary {
  const t = model.tokens;
  const type = String(model.vocabularyType);
  return {
    tokenizer: model.tokenizer,
    bos: t.bos ?? undefined,
    prependBos: t.shouldPrependBosToken,
    ...embeddingBounds(type, {
      bos: t.bos ?? undefined,
      eos: t.eos ?? undefined,
      sep: t.sep ?? undefined,
      prependBos: t.shouldPrependBosToken,
      appendEos: t.shouldAppendEosToken,
    }),
  };
}

/**
 * The start and end tokens of an embedding input, by node-llama-cpp's rules (tokenizerUtils'
 * resolveBeginningTokenToPrepend / resolveEndTokenToAppend, after llama.cpp's llama_tokenize_impl):
 * WPM (BERT) wraps in BOS/CLS and SEP, UGM (T5) appends EOS, RWKV adds nothing, the others follow
 * add_bos and add_eos.
 */
export function embeddingBounds(
  vocabularyType: string,
  t: {
    bos?: Token | undefined;
    eos?: Token | undefined;
    sep?: Token | undefined;
    prependBos: boolean;
    appendEos: boolean;
  },
): { embeddingStart: Token | undefined; embeddingEnd: Token | undefined } {
  switch (vocabularyType) {
    case "rwkv":
      return { embeddingStart: undefined, embeddingEnd: undefined };
    case "wpm":
      return { embeddingStart: t.bos, embeddingEnd: t.sep };
    case "ugm":
      return { embeddingStart: undefined, embeddingEnd: t.eos };
    default:
      return {
        embeddingStart: t.prependBos ? t.bos : undefined,
        embeddingEnd: t.appendEos ? t.eos : undefined,
      };
  }
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

/**
 * The conversation as node-llama-cpp's chat history. An assistant message's tool calls become
 * function calls of its model response, each with the result its `tool` message gave (the reader
 * checked that every call has one), rendered back in the template's call syntax with the arguments
 * exactly as they were written; an assistant message right after the results continues that model
 * response, as the model continues its turn after calling functions.
 */
function toHistory(wrapper: ChatWrapper, messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = [];
  const results = new Map<string, string>();
  for (const m of messages)
    if (m.role === "tool" && m.toolCallId !== undefined) results.set(m.toolCallId, m.content);
  /** The model response that tool results were added to last (the next assistant message continues it). */
  let continued: ChatModelResponse["response"] | undefined;
  for (const m of messages) {
    switch (m.role) {
      case "system":
      case "developer":
        history.push({ type: "system", text: m.content });
        continued = undefined;
        break;
      case "assistant": {
        const response: ChatModelResponse["response"] = continued ?? [];
        if (m.content !== "") response.push(m.content);
        for (const [k, call] of (m.toolCalls ?? []).entries()) {
          response.push({
            type: "functionCall",
            name: call.name,
            params: jsonOrText(call.arguments),
            result: jsonOrText(results.get(call.id) ?? ""),
            rawCall: rawCall(wrapper, call.name, call.arguments).toJSON(),
            ...(k === 0 ? { startsNewChunk: true } : {}),
          });
        }
        if (continued === undefined) history.push({ type: "model", response });
        continued = m.toolCalls ? response : undefined;
        break;
      }
      case "tool":
        // Rendered with its call, in the model response above.
        break;
      default:
        // user, and legacy function results, are user turns.
        history.push({ type: "user", text: m.content });
        continued = undefined;
    }
  }
  return history;
}

/** A result (or arguments) as the template renders it: the JSON value it holds, else the text. */
function jsonOrText(text: string): string | JsonValue {
  try {
    return JSON.parse(text) as JsonValue;
  } catch {
    return text;
  }
}

/**
 * A call as the template writes it (ChatWrapper.generateFunctionCall) with the arguments verbatim,
 * not re-serialized: the prompt shows the call the model made, as it made it.
 */
function rawCall(wrapper: ChatWrapper, name: string, args: string): LlamaText {
  const call = wrapper.settings.functions.call;
  const named = (part: typeof call.prefix) =>
    LlamaText(part).mapValues((v) => (typeof v === "string" ? v.replaceAll("{{functionName}}", name) : v));
  return LlamaText([call.prefix, name, named(call.paramsPrefix), args, named(call.suffix)]);
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

/** The functions offered, as the template documents them. */
function availableFunctions(tools: readonly ToolDefinition[]): ChatModelFunctions {
  const out: Record<string, { description?: string; params?: GbnfJsonSchema }> = {};
  for (const t of tools) {
    out[t.name] = {
      ...(t.description !== undefined ? { description: t.description } : {}),
      params: t.parameters as GbnfJsonSchema,
    };
  }
  return out as ChatModelFunctions;
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
  if (input.kind === "embedding") {
    // As node-llama-cpp's embedding context prepares its input: the bounds unless already there.
    const tokens = vocabulary.tokenizer(input.text, false);
    const { embeddingStart: start, embeddingEnd: end } = vocabulary;
    if (start !== undefined && tokens[0] !== start) tokens.unshift(start);
    if (end !== undefined && tokens.at(-1) !== end) tokens.push(end);
    out.tokens = tokens;
    return out;
  }
  const history = toHistory(wrapper, input.messages);
  if (history.at(-1)?.type !== "model") history.push({ type: "model", response: [] });
  const state = wrapper.generateContextState({
    chatHistory: history,
    ...(input.tools
      ? { availableFunctions: availableFunctions(input.tools), documentFunctionParams: true }
      : {}),
  });
  out.tokens = state.contextText.tokenize(vocabulary.tokenizer);
  if (withTriggers)
    for (const trigger of state.stopGenerationTriggers) triggerToStop(trigger, vocabulary, out);
  return out;
}
