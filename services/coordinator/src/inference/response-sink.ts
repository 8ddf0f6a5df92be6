import type { SignedLogprob } from "@darkbloom/protocol/logprobs";
import type { ResponseProof, SignedChoice } from "@darkbloom/protocol/verifiable-response";
import type { ApiError } from "../errors/index.js";
import type { ProviderHandle } from "../routing/provider-handle.js";

/**
 * A piece of a tool call as OpenAI streams it (`delta.tool_calls[i]`): a call's first piece has its
 * id and name, the next ones more of its arguments' text.
 */
export interface ToolCallDelta {
  /** The call's position in the choice's calls. */
  index: number;
  id?: string;
  name?: string;
  arguments: string;
}

/**
 * What a sink shows of a chunk: the content text and, for a request with `tools`, pieces of its
 * calls (a provider's ChunkPayload is one with text only). `tokenCount` is the completion tokens the
 * provider claimed for it.
 */
export interface OutputChunk {
  text: string;
  tokenCount: number;
  choiceIndex: number;
  toolCalls?: readonly ToolCallDelta[];
  /** The tokens of `text` with their log-probabilities (shown only when the request asked). */
  logprobs?: readonly SignedLogprob[];
}

/** How a request ended on its provider. */
export interface CompletionResult {
  promptTokens: number;
  completionTokens: number;
  /** finish_reason per choice index. */
  finishReasons: ReadonlyMap<number, string>;
  /** The consumer's `darkbloom` object: who served it and the provider's signature over it. */
  proof?: ResponseProof | undefined;
  /**
   * The choices as shown, where they are not the text received alone (a request with `tools`: the
   * content before the calls, and the calls).
   */
  choices?: readonly SignedChoice[] | undefined;
}

/**
 * Where a request's output goes: an SSE stream, a JSON body, or a Connect stream. The pipeline calls
 * attempt() before each try, then chunk() any number of times, then exactly one of complete() or
 * fail(). Once `committed` is true (bytes reached the consumer) the pipeline no longer retries.
 */
export interface ResponseSink {
  readonly committed: boolean;
  /**
   * Whether chunks reach the consumer as they come (SSE, server streams). A non-streaming sink
   * delivers nothing until complete(): a failure before that delivered no token.
   */
  readonly streaming: boolean;
  /** A provider was chosen for the next try; discard anything buffered from an earlier one. */
  attempt(provider: ProviderHandle): void;
  chunk(payload: OutputChunk): void;
  complete(result: CompletionResult): void;
  fail(error: ApiError): void;
}

/**
 * The abort reason of a request stopped from outside the pipeline (a response limit). `byConsumer`
 * says whether the consumer caused it (it stopped reading): only then does a request cancelled after
 * a provider took it pay for the prompt it prefilled. Any other abort reason is the consumer leaving.
 */
export class RequestStopped extends Error {
  constructor(
    message: string,
    readonly byConsumer: boolean,
  ) {
    super(message);
    this.name = "RequestStopped";
  }
}
