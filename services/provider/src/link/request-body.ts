import {
  BodyError,
  type GenerationInput,
  readGenerationInput,
  readLogitBias,
  readLogprobs,
} from "@darkbloom/models";
import { type EmbeddingsRequest, readEmbeddingsRequest } from "@darkbloom/models/embeddings";
import { formatGrammar, readResponseFormat } from "@darkbloom/models/structured";
import { readToolUse, toolsWithFormat } from "@darkbloom/models/tools";
import { Endpoint } from "@darkbloom/protocol/provider/v1";
import type { GenerationRequest, SamplingOptions } from "../engine/engine.js";

export { BodyError };

/** What one consumer request asks the engine for. */
export interface ParsedRequest {
  input: GenerationInput;
  /** Number of choices. */
  n: number;
  /** Sampling shared by every choice; choice i gets seed + i when a seed is set. */
  sampling: SamplingOptions;
}

const MAX_N = 16;
const MAX_STOP = 16;
/** Budget when neither the InferenceRequest nor the body carries one (the coordinator always sets it). */
const FALLBACK_MAX_TOKENS = 1024;

type Json = Record<string, unknown>;

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Reads an OpenAI chat-completions or completions body. `enforcedMaxTokens` is the
 * InferenceRequest's max_tokens, the budget the coordinator bills for; it wins over the body's.
 */
export function parseRequestBody(
  endpoint: Endpoint,
  body: Uint8Array,
  enforcedMaxTokens: number,
): ParsedRequest {
  const o = jsonObject(body);
  let input: GenerationInput;
  if (endpoint === Endpoint.CHAT_COMPLETIONS) input = readGenerationInput("chat", o);
  else if (endpoint === Endpoint.COMPLETIONS) input = readGenerationInput("text", o);
  else throw new BodyError("Unsupported endpoint.", null);

  const bodyMax =
    (endpoint === Endpoint.CHAT_COMPLETIONS ? integer(o, "max_completion_tokens", 1) : undefined) ??
    integer(o, "max_tokens", 1);
  const maxTokens = enforcedMaxTokens > 0 ? enforcedMaxTokens : (bodyMax ?? FALLBACK_MAX_TOKENS);
  const n = integer(o, "n", 1, MAX_N) ?? 1;
  const sampling: SamplingOptions = {
    temperature: number(o, "temperature", 0, 2) ?? 1,
    topP: number(o, "top_p", 0, 1) ?? 1,
    topK: integer(o, "top_k", 0) ?? 0,
    seed: integer(o, "seed", Number.MIN_SAFE_INTEGER),
    stop: stop(o.stop),
    maxTokens,
    presencePenalty: number(o, "presence_penalty", -2, 2),
    frequencyPenalty: number(o, "frequency_penalty", -2, 2),
  };
  // The coordinator refused what these readers refuse; here they build the sampler's inputs.
  const logitBias = readLogitBias(o);
  if (logitBias !== undefined) sampling.logitBias = logitBias;
  const format = readResponseFormat(o);
  if (format !== undefined) sampling.grammar = formatGrammar(format);
  const tools = endpoint === Endpoint.CHAT_COMPLETIONS ? readToolUse(o) : undefined;
  if (tools !== undefined) {
    if (format !== undefined) throw toolsWithFormat();
    sampling.tools = tools;
  }
  const logprobs = readLogprobs(endpoint === Endpoint.CHAT_COMPLETIONS ? "chat" : "text", o);
  if (logprobs !== undefined) sampling.logprobs = logprobs;
  if (sampling.topP === 0) {
    // top_p 0 keeps only the most likely token: greedy decoding (the engine takes top_p in (0, 1]).
    sampling.topP = 1;
    sampling.temperature = 0;
  }
  return { input, n, sampling };
}

/**
 * Reads an OpenAI embeddings body with the reader the coordinator also uses (readEmbeddingsRequest):
 * its inputs, encoding and dimensions. Throws BodyError naming the field.
 */
export function parseEmbeddingsBody(body: Uint8Array): EmbeddingsRequest {
  return readEmbeddingsRequest(jsonObject(body));
}

/** The body's JSON object; BodyError for anything else. */
function jsonObject(body: Uint8Array): Json {
  let parsed: unknown;
  try {
    parsed = JSON.parse(utf8.decode(body));
  } catch {
    throw new BodyError("The request body is not valid JSON.", null);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new BodyError("The request body must be a JSON object.", null);
  }
  return parsed as Json;
}

/** One engine submission per choice, with ids `${requestId}/${i}`. */
export function choiceRequests(requestId: string, model: string, parsed: ParsedRequest): GenerationRequest[] {
  return Array.from({ length: parsed.n }, (_, i) => ({
    id: `${requestId}/${i}`,
    model,
    input: parsed.input,
    sampling: {
      ...parsed.sampling,
      stop: [...parsed.sampling.stop],
      seed: parsed.sampling.seed === undefined ? undefined : parsed.sampling.seed + i,
    },
  }));
}

function stop(value: unknown): string[] {
  if (value === undefined || value === null) return [];
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list) || !list.every((s) => typeof s === "string") || list.length > MAX_STOP) {
    throw new BodyError(`'stop' must be a string or an array of at most ${MAX_STOP} strings.`, "stop");
  }
  return list.filter((s) => s !== "");
}

function number(o: Json, key: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) {
    throw new BodyError(`'${key}' must be a number from ${min} to ${max}.`, key);
  }
  return v;
}

function integer(o: Json, key: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new BodyError(`'${key}' must be an integer from ${min} to ${max}.`, key);
  }
  return v;
}
