import {
  BodyError,
  type GenerationInput,
  readGenerationInput,
  readLogitBias,
  readLogprobs,
} from "@darkbloom/models/input";
import { readResponseFormat, type StructuredFormat } from "@darkbloom/models/structured";
import { readToolUse, type ToolUse, toolsWithFormat } from "@darkbloom/models/tools";
import { Endpoint, ModelFeature } from "@darkbloom/protocol/provider/v1";
import { invalidRequest } from "../errors/index.js";
import {
  estimateTokens,
  MESSAGE_OVERHEAD_TOKENS,
  promptTokenBound,
  REPLY_PRIMER_TOKENS,
  utf8Bytes,
} from "./token-estimate.js";

/** A consumer request after validation: what routing, billing and dispatch need to know. */
export interface ValidatedRequest {
  endpoint: Endpoint;
  model: string;
  stream: boolean;
  includeUsage: boolean;
  /** max_tokens (or max_completion_tokens) as sent; undefined when the consumer sent none. */
  maxTokens: number | undefined;
  n: number;
  /** Estimated prompt tokens (routing, the context gate). */
  promptTokens: number;
  /** The most tokens the prompt can be (token-estimate.ts): held by the reservation, the ceiling on a provider's count. */
  promptTokenBound: number;
  /**
   * The prompt as the provider reads it (the reader both share), for counting its tokens with the
   * model's chat template.
   */
  readonly input: GenerationInput;
  /** The structured output `response_format` asks for (the provider decodes under its grammar). */
  format: StructuredFormat | undefined;
  /** The functions the model may call (`tools` with `tool_choice` other than "none"). */
  tools: ToolUse | undefined;
  /** Alternatives per token when the request asks for log-probabilities (0 to 20), else undefined. */
  logprobs: number | undefined;
  /**
   * Whether the request has stop strings: a choice that ended "stop" may then have been cut by one,
   * and is not held to being a complete structured output or complete calls.
   */
  hasStop: boolean;
  /** What the provider's engine must enforce for this request (routing takes only providers that do). */
  features: ModelFeature[];
  /** The request JSON exactly as the consumer sent it; forwarded to the provider unchanged. */
  body: Uint8Array;
}

export const LIMITS = {
  maxTokens: 1_000_000,
  maxN: 8,
  maxStop: 4,
  maxMessages: 4096,
  maxModelLength: 256,
} as const;

const CHAT_ROLES = new Set(["system", "user", "assistant", "developer", "tool", "function"]);

type Json = Record<string, unknown>;

/**
 * JSON text must be UTF-8 (RFC 8259 §8.1). Bytes that are not are refused rather than replaced with
 * U+FFFD: the body is forwarded unchanged, and the provider decodes it strictly, so a lenient decoder
 * here would validate a different request from the one the provider reads. A leading BOM is kept (and
 * refused by JSON.parse) as before.
 */
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A request body's JSON object (strict UTF-8); 400 invalid_json otherwise. */
export function parseBodyObject(body: Uint8Array): Json {
  let parsed: unknown;
  try {
    parsed = JSON.parse(utf8.decode(body));
  } catch (e) {
    throw invalidRequest(
      `We could not parse the JSON body of your request (${e instanceof Error ? e.message : "invalid JSON"}).`,
      null,
      "invalid_json",
    );
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw invalidRequest("The request body must be a JSON object.", null, "invalid_json");
  }
  return parsed as Json;
}

/** The body's `model`: a non-empty string of bounded length. */
export function readModel(o: Json): string {
  const model = o.model;
  if (model === undefined || model === null || model === "") {
    throw invalidRequest("You must provide a model parameter.", "model");
  }
  if (typeof model !== "string") throw invalidRequest("'model' must be a string.", "model");
  if (model.length > LIMITS.maxModelLength) {
    throw invalidRequest(`'model' is longer than ${LIMITS.maxModelLength} characters.`, "model");
  }
  return model;
}

/** Parses and validates a POST /v1/chat/completions or /v1/completions body. Unknown fields are tolerated. */
export function validateRequest(endpoint: Endpoint, body: Uint8Array): ValidatedRequest {
  const o = parseBodyObject(body);
  const model = readModel(o);

  const prompt =
    endpoint === Endpoint.CHAT_COMPLETIONS ? validateMessages(o.messages) : validatePrompt(o.prompt);

  const stream = optionalBoolean(o, "stream") ?? false;
  let includeUsage = false;
  if (o.stream_options !== undefined && o.stream_options !== null) {
    if (!stream) {
      throw invalidRequest(
        "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        "stream_options",
      );
    }
    if (typeof o.stream_options !== "object" || Array.isArray(o.stream_options)) {
      throw invalidRequest("'stream_options' must be an object.", "stream_options");
    }
    includeUsage =
      optionalBoolean(o.stream_options as Json, "include_usage", "stream_options.include_usage") ?? false;
  }

  const maxCompletion =
    endpoint === Endpoint.CHAT_COMPLETIONS
      ? optionalInteger(o, "max_completion_tokens", 1, LIMITS.maxTokens)
      : undefined;
  const maxTokens = maxCompletion ?? optionalInteger(o, "max_tokens", 1, LIMITS.maxTokens);
  const n = optionalInteger(o, "n", 1, LIMITS.maxN) ?? 1;
  optionalNumber(o, "temperature", 0, 2);
  optionalNumber(o, "top_p", 0, 1);
  optionalInteger(o, "top_k", 0, 1_000_000);
  optionalNumber(o, "presence_penalty", -2, 2);
  optionalNumber(o, "frequency_penalty", -2, 2);
  optionalInteger(o, "seed", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  validateStop(o.stop);
  if (o.user !== undefined && o.user !== null && typeof o.user !== "string") {
    throw invalidRequest("'user' must be a string.", "user");
  }
  refuseUnserved(o);
  const logprobs = read(() => readLogprobs(endpoint === Endpoint.CHAT_COMPLETIONS ? "chat" : "text", o));
  const format = read(() => readResponseFormat(o));
  read(() => readLogitBias(o));
  let tools: ToolUse | undefined;
  if (endpoint === Endpoint.CHAT_COMPLETIONS) {
    tools = read(() => readToolUse(o));
    if (tools !== undefined && format !== undefined) {
      const refused = toolsWithFormat();
      throw invalidRequest(refused.message, refused.param);
    }
    if (tools !== undefined) {
      // The template documents the functions in the prompt: its bound grows with them.
      const documented = JSON.stringify(o.tools);
      prompt.bytes += utf8Bytes(documented) * 2;
      prompt.messages += (o.tools as unknown[]).length;
      prompt.extraTokens += TOOLS_PREAMBLE_TOKENS;
      prompt.estimate += estimateTokens(documented) + TOOLS_PREAMBLE_TOKENS / 4;
    }
  } else {
    for (const param of ["tools", "tool_choice", "parallel_tool_calls"]) {
      if (o[param] !== undefined && o[param] !== null)
        throw invalidRequest(`'${param}' is served on /v1/chat/completions only.`, param);
    }
  }
  if (endpoint === Endpoint.COMPLETIONS && o.echo === true) {
    throw invalidRequest("'echo' is not supported by this network.", "echo");
  }
  const bestOf = optionalInteger(o, "best_of", 1, LIMITS.maxN);
  if (bestOf !== undefined && bestOf !== n) {
    throw invalidRequest("'best_of' other than n is not supported by this network.", "best_of");
  }

  let input: GenerationInput | undefined;
  // Calls and results in the conversation are read now: their shape and pairing are checked before
  // anything is reserved (a plain conversation is read only when its prompt is counted).
  if (prompt.toolTurns) input = generationInput(endpoint, o);
  return {
    endpoint,
    model,
    stream,
    includeUsage,
    maxTokens,
    n,
    promptTokens: prompt.estimate,
    promptTokenBound: promptTokenBound(prompt.bytes, prompt.messages) + prompt.extraTokens,
    format,
    tools,
    hasStop:
      o.stop !== undefined &&
      o.stop !== null &&
      o.stop !== "" &&
      !(Array.isArray(o.stop) && o.stop.length === 0),
    logprobs,
    features: [
      ...(format === undefined && tools === undefined ? [] : [ModelFeature.GRAMMAR]),
      ...(logprobs === undefined ? [] : [ModelFeature.LOGPROBS]),
    ],
    // Read when first asked for: only a model with a vocabulary counts its prompt.
    get input() {
      input ??= generationInput(endpoint, o);
      return input;
    },
    body,
  };
}

/** A field read by the provider's own reader: what it refuses is a 400 naming the param. */
export function read<T>(reader: () => T): T {
  try {
    return reader();
  } catch (e) {
    if (e instanceof BodyError) throw invalidRequest(e.message, e.param);
    throw e;
  }
}

/**
 * Parameters whose effect this network does not produce yet: each is refused by name rather than
 * ignored, since a client that sends one relies on what it does (functions it would call, audio
 * it would play). Their empty or default forms pass.
 */
function refuseUnserved(o: Json): void {
  const present = (v: unknown) =>
    v !== undefined &&
    v !== null &&
    !(Array.isArray(v) && v.length === 0) &&
    !(typeof v === "object" && !Array.isArray(v) && Object.keys(v as object).length === 0);
  const refuse = (param: string, what: string) => {
    throw invalidRequest(`'${param}' (${what}) is not supported by this network yet.`, param);
  };
  if (present(o.functions)) refuse("functions", "legacy function calling: send 'tools'");
  if (present(o.function_call) && o.function_call !== "none" && o.function_call !== "auto")
    refuse("function_call", "legacy function calling: send 'tool_choice'");
  if (present(o.suffix) && o.suffix !== "") refuse("suffix", "insertion");
  if (present(o.audio)) refuse("audio", "audio output");
  if (present(o.prediction)) refuse("prediction", "predicted outputs");
  if (Array.isArray(o.modalities) && o.modalities.some((m) => m !== "text"))
    refuse("modalities", "outputs other than text");
}

/** The reader the provider uses; the validation above is stricter, so it refuses nothing more. */
function generationInput(endpoint: Endpoint, o: Json): GenerationInput {
  try {
    return readGenerationInput(endpoint === Endpoint.CHAT_COMPLETIONS ? "chat" : "text", o);
  } catch (e) {
    if (e instanceof BodyError) throw invalidRequest(e.message, e.param);
    throw e;
  }
}

/** A prompt's size: the estimate (routing) and the text's UTF-8 bytes in how many messages (the bound). */
interface PromptSize {
  estimate: number;
  bytes: number;
  messages: number;
  /** Tokens the bound adds beyond bytes and messages (the functions' documentation). */
  extraTokens: number;
  /** Whether the conversation has tool calls or tool results. */
  toolTurns: boolean;
}

/**
 * The most tokens a chat template's fixed text about functions can be (its instructions and the
 * call format it shows); the functions themselves are bounded by twice their JSON's bytes (the
 * TypeScript-like signatures templates write are shorter than the schema they come from).
 */
const TOOLS_PREAMBLE_TOKENS = 1024;
/** Tokens a template adds around one call or one result (the call syntax, the result's framing). */
const TOOL_CALL_FRAMING_TOKENS = 64;

function validateMessages(messages: unknown): PromptSize {
  if (messages === undefined || messages === null) {
    throw invalidRequest("You must provide a messages parameter.", "messages");
  }
  if (!Array.isArray(messages)) throw invalidRequest("'messages' must be an array.", "messages");
  if (messages.length === 0)
    throw invalidRequest("'messages' must contain at least one message.", "messages");
  if (messages.length > LIMITS.maxMessages) {
    throw invalidRequest(`'messages' has more than ${LIMITS.maxMessages} messages.`, "messages");
  }
  const size: PromptSize = {
    estimate: REPLY_PRIMER_TOKENS,
    bytes: 0,
    messages: messages.length,
    extraTokens: 0,
    toolTurns: false,
  };
  messages.forEach((m: unknown, i) => {
    const at = `messages[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m))
      throw invalidRequest(`'${at}' must be an object.`, at);
    const msg = m as Json;
    if (typeof msg.role !== "string" || !CHAT_ROLES.has(msg.role)) {
      throw invalidRequest(
        `'${at}.role' must be one of ${[...CHAT_ROLES].map((r) => `'${r}'`).join(", ")}.`,
        `${at}.role`,
      );
    }
    size.estimate += MESSAGE_OVERHEAD_TOKENS;
    addContent(size, msg, at);
    if (
      msg.role === "tool" ||
      (msg.role === "assistant" && msg.tool_calls !== undefined && msg.tool_calls !== null)
    )
      addToolTurn(size, msg);
  });
  return size;
}

/** A tool result, or an assistant message's calls (their shape is the shared reader's to check). */
function addToolTurn(size: PromptSize, msg: Json): void {
  size.toolTurns = true;
  size.extraTokens += TOOL_CALL_FRAMING_TOKENS;
  // A result is rendered as the JSON it holds, re-serialized, or as a JSON string (a control
  // character becomes a six-byte escape): up to six bytes a byte of its text.
  if (msg.role === "tool") size.bytes += 5 * utf8Bytes(JSON.stringify(msg.content ?? ""));
  if (!Array.isArray(msg.tool_calls)) return;
  for (const call of msg.tool_calls) {
    const fn = (call as Json | null)?.function as Json | undefined;
    for (const text of [fn?.name, fn?.arguments]) if (typeof text === "string") addText(size, text);
    size.extraTokens += TOOL_CALL_FRAMING_TOKENS;
  }
}

function addText(size: PromptSize, text: string): void {
  size.estimate += estimateTokens(text);
  size.bytes += utf8Bytes(text);
}

function addContent(size: PromptSize, msg: Json, at: string): void {
  const content = msg.content;
  if (typeof content === "string") {
    addText(size, content);
    return;
  }
  if (content === null || content === undefined) {
    if (msg.role === "assistant") return;
    throw invalidRequest(`'${at}.content' is required for role '${String(msg.role)}'.`, `${at}.content`);
  }
  if (!Array.isArray(content)) {
    throw invalidRequest(`'${at}.content' must be a string or an array of content parts.`, `${at}.content`);
  }
  content.forEach((part: unknown, j) => {
    const p = `${at}.content[${j}]`;
    if (typeof part !== "object" || part === null) throw invalidRequest(`'${p}' must be an object.`, p);
    const { type, text } = part as Json;
    if (type !== "text") {
      throw invalidRequest(
        `'${p}.type' is ${JSON.stringify(type)}; only 'text' content parts are supported.`,
        `${p}.type`,
      );
    }
    if (typeof text !== "string") throw invalidRequest(`'${p}.text' must be a string.`, `${p}.text`);
    addText(size, text);
  });
}

function validatePrompt(prompt: unknown): PromptSize {
  if (prompt === undefined || prompt === null)
    throw invalidRequest("You must provide a prompt parameter.", "prompt");
  const size: PromptSize = { estimate: 0, bytes: 0, messages: 0, extraTokens: 0, toolTurns: false };
  if (typeof prompt === "string") {
    addText(size, prompt);
    return size;
  }
  if (Array.isArray(prompt)) {
    if (prompt.length === 1 && typeof prompt[0] === "string") {
      addText(size, prompt[0]);
      return size;
    }
    if (prompt.every((p) => typeof p === "string")) {
      throw invalidRequest("Batched prompts are not supported; send one prompt per request.", "prompt");
    }
    throw invalidRequest("Token-id prompts are not supported; send the prompt as a string.", "prompt");
  }
  throw invalidRequest("'prompt' must be a string.", "prompt");
}

/** Validates `stop`. */
function validateStop(stop: unknown): void {
  if (stop === undefined || stop === null || typeof stop === "string") return;
  if (!Array.isArray(stop) || !stop.every((s) => typeof s === "string")) {
    throw invalidRequest("'stop' must be a string or an array of strings.", "stop");
  }
  if (stop.length > LIMITS.maxStop) {
    throw invalidRequest(`'stop' may contain at most ${LIMITS.maxStop} sequences.`, "stop");
  }
}

function optionalBoolean(o: Json, key: string, param = key): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw invalidRequest(`'${param}' must be a boolean.`, param);
  return v;
}

function optionalNumber(o: Json, key: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) throw invalidRequest(`'${key}' must be a number.`, key);
  if (v < min || v > max) throw invalidRequest(`'${key}' must be between ${min} and ${max}, got ${v}.`, key);
  return v;
}

function optionalInteger(o: Json, key: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v))
    throw invalidRequest(`'${key}' must be an integer.`, key);
  if (v < min) throw invalidRequest(`'${key}' must be at least ${min}, got ${v}.`, key);
  if (v > max) throw invalidRequest(`'${key}' must be at most ${max}, got ${v}.`, key);
  return v;
}
