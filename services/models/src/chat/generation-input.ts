/**
 * What a consumer asks a model to continue, read from an OpenAI request body. The provider renders it
 * into prompt tokens, and the coordinator counts those tokens itself to check what the provider
 * reports, so both read the body with this one function: any difference in how a message's content
 * is read would be a difference in the count.
 */

import { BodyError } from "./body-error.js";
import { readToolDefinitions, type ToolDefinition } from "./tool-input.js";

export { BodyError } from "./body-error.js";

export type { ToolDefinition } from "./tool-input.js";

/** A function call an assistant message made (OpenAI's `message.tool_calls[i]`). */
export interface ToolCallRecord {
  id: string;
  name: string;
  /** The arguments as the JSON text the model wrote (rendered back verbatim). */
  arguments: string;
}

/** One chat message as the OpenAI API carries it (text content only). */
export interface ChatMessage {
  role: "system" | "user" | "assistant" | "developer" | "tool" | "function";
  content: string;
  /** An assistant message's tool calls; each is answered by a later `tool` message. */
  toolCalls?: ToolCallRecord[];
  /** A `tool` message: the id of the call it answers. */
  toolCallId?: string;
}

/**
 * What to generate from: a conversation (rendered with the model's chat template, with the functions
 * the model may call documented the template's way) or raw text.
 */
export type GenerationInput =
  | { kind: "chat"; messages: ChatMessage[]; tools?: ToolDefinition[] }
  | { kind: "text"; prompt: string }
  | EmbeddingInput;

/**
 * One input of an embeddings request: evaluated as llama.cpp evaluates an embedding input (the text's
 * tokens with the vocabulary's start and end tokens), never generated from. Counted like a prompt.
 */
export interface EmbeddingInput {
  kind: "embedding";
  text: string;
}

const ROLES = new Set<ChatMessage["role"]>(["system", "user", "assistant", "developer", "tool", "function"]);

type Json = Record<string, unknown>;

/**
 * The input of a chat-completions body (`messages`) or a completions body (`prompt`), from its parsed
 * JSON object. Content parts are joined with newlines; only text parts are accepted.
 */
export function readGenerationInput(kind: "chat" | "text", body: Json): GenerationInput {
  if (kind === "text") return { kind, prompt: prompt(body.prompt) };
  const input: GenerationInput = { kind, messages: messages(body.messages) };
  const tools = readToolDefinitions(body);
  if (tools !== undefined) input.tools = tools;
  return input;
}

function messages(value: unknown): ChatMessage[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new BodyError("'messages' must be a non-empty array.", "messages");
  }
  const out = value.map((m: unknown, i): ChatMessage => {
    const at = `messages[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m))
      throw new BodyError(`'${at}' must be an object.`, at);
    const { role, content, tool_calls, tool_call_id } = m as Json;
    if (typeof role !== "string" || !ROLES.has(role as ChatMessage["role"])) {
      throw new BodyError(`'${at}.role' is not a supported role.`, `${at}.role`);
    }
    const message: ChatMessage = { role: role as ChatMessage["role"], content: messageContent(content, at) };
    if (role === "assistant" && tool_calls !== undefined && tool_calls !== null) {
      const calls = toolCalls(tool_calls, `${at}.tool_calls`);
      if (calls.length > 0) message.toolCalls = calls;
    }
    if (role === "tool") {
      if (typeof tool_call_id !== "string" || tool_call_id === "") {
        throw new BodyError(`'${at}.tool_call_id' is required for role 'tool'.`, `${at}.tool_call_id`);
      }
      message.toolCallId = tool_call_id;
    }
    return message;
  });
  checkToolAnswers(out);
  return out;
}

/** The most tool calls one assistant message may carry. */
const MAX_TOOL_CALLS = 128;

function toolCalls(value: unknown, at: string): ToolCallRecord[] {
  if (!Array.isArray(value)) throw new BodyError(`'${at}' must be an array.`, at);
  if (value.length > MAX_TOOL_CALLS)
    throw new BodyError(`'${at}' has more than ${MAX_TOOL_CALLS} calls.`, at);
  return value.map((c: unknown, j) => {
    const p = `${at}[${j}]`;
    const call = c as Json | null;
    if (typeof call !== "object" || call === null || Array.isArray(call))
      throw new BodyError(`'${p}' must be an object.`, p);
    if (call.type !== undefined && call.type !== "function")
      throw new BodyError(`'${p}.type' must be 'function'.`, `${p}.type`);
    if (typeof call.id !== "string" || call.id === "")
      throw new BodyError(`'${p}.id' must be a non-empty string.`, `${p}.id`);
    const fn = call.function as Json | null;
    if (typeof fn !== "object" || fn === null || Array.isArray(fn))
      throw new BodyError(`'${p}.function' must be an object.`, `${p}.function`);
    if (typeof fn.name !== "string" || fn.name === "")
      throw new BodyError(`'${p}.function.name' must be a non-empty string.`, `${p}.function.name`);
    if (typeof fn.arguments !== "string")
      throw new BodyError(`'${p}.function.arguments' must be a string.`, `${p}.function.arguments`);
    return { id: call.id, name: fn.name, arguments: fn.arguments };
  });
}

/**
 * OpenAI's rule, which the chat template needs too (it renders each call with its result): the
 * tool calls of an assistant message are answered by the `tool` messages right after it, one per
 * call, and a `tool` message answers a call of that assistant message.
 */
function checkToolAnswers(messages: readonly ChatMessage[]): void {
  let open: Set<string> | undefined;
  let openAt = -1;
  const unanswered = () => {
    if (open !== undefined && open.size > 0) {
      const at = `messages[${openAt}].tool_calls`;
      throw new BodyError(
        `An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id' (${[...open].map((id) => JSON.stringify(id)).join(", ")} unanswered).`,
        at,
      );
    }
  };
  messages.forEach((m, i) => {
    if (m.role === "tool") {
      if (open === undefined || !open.delete(m.toolCallId as string)) {
        throw new BodyError(
          `'messages[${i}]' with role 'tool' must answer a tool call of the assistant message before it.`,
          `messages[${i}].tool_call_id`,
        );
      }
      return;
    }
    unanswered();
    open = undefined;
    if (m.toolCalls) {
      open = new Set(m.toolCalls.map((c) => c.id));
      if (open.size !== m.toolCalls.length) {
        throw new BodyError(
          `'messages[${i}].tool_calls' has two calls with one id.`,
          `messages[${i}].tool_calls`,
        );
      }
      openAt = i;
    }
  });
  unanswered();
}

function messageContent(content: unknown, at: string): string {
  if (typeof content === "string") return content;
  if (content === null || content === undefined) return "";
  if (!Array.isArray(content)) {
    throw new BodyError(`'${at}.content' must be a string or an array of text parts.`, `${at}.content`);
  }
  return content
    .map((part: unknown, j) => {
      const p = part as Json | null;
      if (typeof p !== "object" || p === null || p.type !== "text" || typeof p.text !== "string") {
        throw new BodyError(`'${at}.content[${j}]' must be a text part.`, `${at}.content[${j}]`);
      }
      return p.text;
    })
    .join("\n");
}

function prompt(value: unknown): string {
  if (typeof value === "string") return value;
  if (Array.isArray(value) && value.length === 1 && typeof value[0] === "string") return value[0];
  throw new BodyError("'prompt' must be a string.", "prompt");
}

/** The most entries a logit_bias may have (a bound on the work one request asks of a sampler). */
export const LOGIT_BIAS_MAX_ENTRIES = 1024;

/**
 * `logit_bias` as [token, bias] pairs (undefined when absent or empty): OpenAI's map from token ids
 * (as strings) to a bias from -100 to 100 added to the token's logit. -100 bans the token (-Infinity
 * here: a finite -100 can lose to a grammar or a penalty); whether a token is in the model's
 * vocabulary only the provider knows, and its engine refuses one that is not.
 */
export function readLogitBias(body: Json): Array<[number, number]> | undefined {
  const value = body.logit_bias;
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new BodyError("'logit_bias' must be an object mapping token ids to biases.", "logit_bias");
  }
  const entries = Object.entries(value as Json);
  if (entries.length > LOGIT_BIAS_MAX_ENTRIES) {
    throw new BodyError(`'logit_bias' may hold at most ${LOGIT_BIAS_MAX_ENTRIES} tokens.`, "logit_bias");
  }
  const pairs: Array<[number, number]> = [];
  for (const [key, bias] of entries) {
    if (!/^(0|[1-9][0-9]{0,9})$/.test(key) || Number(key) > 2 ** 31 - 1) {
      throw new BodyError(
        `'logit_bias' keys must be token ids; ${JSON.stringify(key)} is not.`,
        "logit_bias",
      );
    }
    if (typeof bias !== "number" || !Number.isFinite(bias) || bias < -100 || bias > 100) {
      throw new BodyError(
        `'logit_bias' values must be numbers from -100 to 100 (token ${key}).`,
        "logit_bias",
      );
    }
    pairs.push([Number(key), bias <= -100 ? Number.NEGATIVE_INFINITY : bias]);
  }
  return pairs.length === 0 ? undefined : pairs;
}

/** The most alternatives per token a chat request may ask for (OpenAI's top_logprobs). */
export const MAX_TOP_LOGPROBS = 20;
/** The most a text completion's `logprobs` may ask for (OpenAI's legacy limit). */
export const MAX_COMPLETION_LOGPROBS = 5;

/**
 * How many alternatives per token a request asks log-probabilities for, or undefined when it asks
 * for none. Chat: `logprobs: true`, with `top_logprobs` 0 to 20 (0 when absent), which OpenAI only
 * takes together with `logprobs: true`. Text completions (legacy): `logprobs` 0 to 5 is that number
 * itself. Not together with `tools`: the calls are not text the entries could spell.
 */
export function readLogprobs(kind: "chat" | "text", body: Json): number | undefined {
  let top: number | undefined;
  const integer = (key: string, max: number): number => {
    const v = body[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) {
      throw new BodyError(`'${key}' must be an integer from 0 to ${max}.`, key);
    }
    return v;
  };
  if (kind === "chat") {
    const on = body.logprobs;
    if (on !== undefined && on !== null && typeof on !== "boolean") {
      throw new BodyError("'logprobs' must be a boolean.", "logprobs");
    }
    const asked = body.top_logprobs !== undefined && body.top_logprobs !== null;
    // top_logprobs 0 asks for nothing: its default form passes alone.
    if (asked && on !== true && body.top_logprobs !== 0) {
      throw new BodyError("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs");
    }
    if (on === true) top = asked ? integer("top_logprobs", MAX_TOP_LOGPROBS) : 0;
  } else if (body.logprobs !== undefined && body.logprobs !== null) {
    top = integer("logprobs", MAX_COMPLETION_LOGPROBS);
  }
  const tools = body.tools;
  if (top !== undefined && Array.isArray(tools) && tools.length > 0 && body.tool_choice !== "none") {
    throw new BodyError(
      "'logprobs' cannot be served together with 'tools': function calls are not text tokens.",
      "logprobs",
    );
  }
  return top;
}
