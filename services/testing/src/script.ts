import type { SignedLogprob } from "@darkbloom/protocol/logprobs";
import type { Endpoint } from "@darkbloom/protocol/provider/v1";
import type { InferenceFailure } from "@darkbloom/protocol/provider-client";
import type { ScriptedEmbeddings } from "./scripted-embeddings.js";

/** An InferenceRequest as the scripted provider received it. */
export interface ReceivedRequest {
  requestId: string;
  model: string;
  endpoint: Endpoint;
  /** Whether the body came sealed (end-to-end encrypted) rather than in the clear. */
  sealed: boolean;
  /** The plaintext body parsed as JSON; undefined when it is absent, did not open or is not JSON. */
  body: unknown;
  /** The body bytes as received, after opening a sealed one (empty when absent or it did not open). */
  rawBody: Uint8Array;
  maxTokens: number;
  stream: boolean;
  promptTokensEstimate: number;
}

/** An InferenceError the provider sends instead of finishing a request (its fields but request_id). */
export type ScriptError = InferenceFailure;

/** When a scripted failure strikes. */
export type FailurePoint = "before_accept" | "before_first_token" | "after_tokens";

/**
 * How a request fails: an InferenceError, "disconnect" (the whole connection drops at once, like a
 * killed process) or "stall" (the request goes silent until cancelled or the stream ends).
 */
export type FailureMode = ScriptError | "disconnect" | "stall";

export interface ScriptFailure {
  when: FailurePoint;
  /** For "after_tokens": how many tokens of each choice go out first (default 1). */
  afterTokens?: number;
  /** Default: a provider_error 500, retryable when nothing was generated. */
  error?: FailureMode;
}

/** What the scripted provider answers to one request. */
export interface Script {
  tokens: readonly string[];
  /** Delay between InferenceAccepted and the first chunk (simulated prefill). */
  firstTokenDelayMs?: number;
  /** Delay per token after the first chunk: a chunk of k tokens follows the previous one by k × this. */
  interTokenDelayMs?: number;
  /** Tokens per InferenceChunk (default 1). */
  tokensPerChunk?: number;
  /** usage.prompt_tokens (default: the coordinator's prompt_tokens_estimate). */
  promptTokens?: number;
  /** finish_reason when the tokens run out (default "stop"); a max_tokens cut reports "length". */
  finishReason?: string;
  /** Number of choices; each repeats the tokens under its own choice_index (default: the body's n, else 1). */
  choices?: number;
  fail?: ScriptFailure;
  /** A misbehaving provider: ignore the request's max_tokens and send every token (default false). */
  ignoreMaxTokens?: boolean;
  /** A provider lying about usage: the token_count written on every chunk instead of the real one. */
  claimedTokensPerChunk?: number;
  /** A provider lying about usage: usage.completion_tokens instead of the tokens it sent. */
  completionTokens?: number;
  /** The answer to an embeddings request (its tokens are then unused). */
  embeddings?: ScriptedEmbeddings;
  /**
   * Each token's log-probability entry (one per token, same positions): chunks then carry the
   * entries of their tokens and the signature covers them, as a daemon does for a request that asked.
   */
  logprobs?: readonly SignedLogprob[];
}

/** Decides what to answer to a request. */
export type ScriptFn = (request: ReceivedRequest) => Script;

/** The default script's tokens: "tok0 " to "tok15 ". */
export const DEFAULT_TOKENS: readonly string[] = Array.from({ length: 16 }, (_, i) => `tok${i} `);

/** The default script: 16 tokens at once. */
export const defaultScript: ScriptFn = () => ({ tokens: DEFAULT_TOKENS });

/** A script resolved against its request: every choice the provider makes for it. */
export interface Plan {
  tokens: readonly string[];
  /** Token positions (per choice) to send before finishing or failing. */
  emit: number;
  choices: number;
  tokensPerChunk: number;
  firstTokenDelayMs: number;
  interTokenDelayMs: number;
  promptTokens: number;
  /** token_count written on each chunk; undefined: the chunk's real count. */
  claimedTokensPerChunk: number | undefined;
  /** usage.completion_tokens; undefined: the tokens sent. */
  completionTokens: number | undefined;
  finishReason: string;
  failure: { when: FailurePoint; mode: FailureMode } | undefined;
  embeddings: ScriptedEmbeddings | undefined;
  logprobs: readonly SignedLogprob[] | undefined;
}

/** Resolves a script against its request: max_tokens cut, failure point, defaults. */
export function planFor(script: Script, request: ReceivedRequest): Plan {
  const available = script.tokens.length;
  const limit =
    request.maxTokens > 0 && !script.ignoreMaxTokens ? Math.min(available, request.maxTokens) : available;
  const fail = script.fail;
  const emit = fail?.when === "after_tokens" ? Math.min(limit, Math.max(0, fail.afterTokens ?? 1)) : limit;
  return {
    tokens: script.tokens,
    emit,
    choices: positiveInt(script.choices) ?? positiveInt(requestedChoices(request.body)) ?? 1,
    tokensPerChunk: positiveInt(script.tokensPerChunk) ?? 1,
    firstTokenDelayMs: Math.max(0, script.firstTokenDelayMs ?? 0),
    interTokenDelayMs: Math.max(0, script.interTokenDelayMs ?? 0),
    promptTokens: script.promptTokens ?? request.promptTokensEstimate,
    claimedTokensPerChunk: script.claimedTokensPerChunk,
    completionTokens: script.completionTokens,
    finishReason: limit < available ? "length" : (script.finishReason ?? "stop"),
    failure: fail && { when: fail.when, mode: fail.error ?? defaultFailure(fail.when) },
    embeddings: script.embeddings,
    logprobs: script.logprobs,
  };
}

function defaultFailure(when: FailurePoint): ScriptError {
  return {
    httpStatus: 500,
    code: "provider_error",
    message: `scripted failure ${when}`,
    retryable: when !== "after_tokens",
  };
}

function requestedChoices(body: unknown): unknown {
  return typeof body === "object" && body !== null ? (body as { n?: unknown }).n : undefined;
}

function positiveInt(value: unknown): number | undefined {
  return typeof value === "number" && Number.isInteger(value) && value > 0 ? value : undefined;
}
