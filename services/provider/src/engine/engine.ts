/**
 * The contract between the provider daemon and an inference engine. The daemon's link layer turns
 * each InferenceRequest into one GenerationRequest per choice (n > 1 submits n of them) and streams
 * the tokens back, or for an embeddings request into one EmbeddingRequest whose vectors it sends one
 * chunk per input; engines own batching, sampling, the context gate and KV-cache settings.
 */

import type { EmbeddingInput, GenerationInput } from "@darkbloom/models";
import type { EmbeddingModel } from "@darkbloom/models/embeddings";
import type { SplitCall, ToolUse } from "@darkbloom/models/tools";

/** What to generate from (read from the request body by the one reader the coordinator also uses). */
export type { ChatMessage, EmbeddingInput, GenerationInput } from "@darkbloom/models";

export interface SamplingOptions {
  /** 0 is greedy (deterministic). */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 disables. */
  topP: number;
  /** 0 disables. */
  topK: number;
  /** Same seed, same model, same input: same output. Undefined picks a random seed. */
  seed?: number | undefined;
  /** Generation stops before any of these strings; they are not emitted. */
  stop: string[];
  /** Completion-token budget; reaching it ends with finish reason "length". */
  maxTokens: number;
  presencePenalty?: number | undefined;
  frequencyPenalty?: number | undefined;
  /**
   * OpenAI's logit_bias as [token, bias] pairs, added to the token's logit before sampling;
   * -Infinity bans it (what the request's -100 means). A token outside the model's vocabulary is
   * refused with invalid_request.
   */
  logitBias?: ReadonlyArray<readonly [number, number]> | undefined;
  /**
   * A GBNF grammar (llama.cpp's format) every sampled token must keep the output inside: the
   * request's `response_format`, built by @darkbloom/models/structured. Once the grammar is complete
   * only end-of-generation is allowed. An engine that cannot enforce one refuses the request
   * (`invalid_request`) rather than decode without it, and says so through `constrains`.
   */
  grammar?: string | undefined;
  /**
   * The functions the model may call (`tools`, `tool_choice`, `parallel_tool_calls`): the engine
   * decodes under the grammar of the calls in the model's own call syntax (toolCallGrammar), splits
   * the output into content and calls (GenerationResult.tools), and ends a turn that called functions
   * with "tool_calls". Not together with `grammar`. An engine that cannot enforce grammars, or a model
   * whose chat template has no call syntax, refuses the request (`invalid_request`).
   */
  tools?: ToolUse | undefined;
  /**
   * Report each sampled token's log-probability with this many (0 to 20) of the most likely
   * alternatives (TokenEvent.logprobs); undefined: none. Only engines whose `logprobs` says so take
   * it; others refuse the request (invalid_request). Not together with `tools`.
   */
  logprobs?: number | undefined;
}

export interface GenerationRequest {
  /** Unique per submission (the daemon uses `${requestId}/${choiceIndex}`). */
  id: string;
  model: string;
  input: GenerationInput;
  sampling: SamplingOptions;
}

/** One of the most likely tokens at a position. */
export interface TopLogprob {
  /** Its bytes (a control token's are empty, as in text). */
  bytes: Uint8Array;
  /** Natural log of its probability under the model's raw distribution; a binary32 value, >= -9999. */
  logprob: number;
}

/**
 * A sampled token's log-probability under the model's raw distribution: the log-softmax of its
 * logits, before logit bias, penalties, grammar, temperature or any filter (vLLM's default, and
 * llama-server's without post_sampling_probs), so the figures do not depend on how it was sampled.
 */
export interface TokenLogprob extends TopLogprob {
  /**
   * The token's bytes as the text shows them: its piece, except where the text is not its pieces
   * (a vocabulary's space clean-up, a character completed only by the flush), and for the token in
   * which a stop string begins, only its bytes before the stop string.
   */
  bytes: Uint8Array;
  /**
   * At most the requested number of the most likely tokens, most likely first, equal values by
   * bytes (@darkbloom/protocol/logprobs' compareTop); each token's bytes once, the most likely token
   * having them.
   */
  top: TopLogprob[];
}

/** Text produced since the previous event, and how many tokens it holds. */
export interface TokenEvent {
  text: string;
  tokens: number;
  /**
   * With `sampling.logprobs`: the entries of the tokens this text is, in order; their bytes
   * concatenated are exactly the text's UTF-8 (an event may then carry tokens with no text, such as
   * a control token's, with "" as its text).
   */
  logprobs?: TokenLogprob[];
}

export interface GenerationResult {
  promptTokens: number;
  /**
   * What is billed: the tokens the model's tokenizer makes of the text emitted (through onToken),
   * counted once over the whole choice, at most max_tokens (choiceCompletionTokens). The coordinator
   * counts the text it forwarded the same way and refuses any other figure, so it must not be the
   * number of tokens sampled (a sampler may produce a non-canonical split, or tokens with no text).
   */
  completionTokens: number;
  /** Tokens sampled (what max_tokens limits; at least completionTokens for a canonical split). */
  generatedTokens: number;
  /** "tool_calls": the turn ended after calling functions (a request with `tools`). */
  finishReason: "stop" | "length" | "tool_calls" | "cancelled";
  /**
   * A request with `tools`: the emitted text split into the content before the calls and the calls
   * (what the consumer is shown, and the response signature covers); the emitted text is what was
   * counted.
   */
  tools?: { content: string; calls: SplitCall[] } | undefined;
}

/** A running generation. */
export interface Generation {
  /** Resolves when generation ends (also after cancel(), with finishReason "cancelled"); rejects with EngineError. */
  readonly done: Promise<GenerationResult>;
  /** Stops at once and frees the batch row. Idempotent. */
  cancel(): void;
}

/**
 * An embeddings request (POST /v1/embeddings): each input is evaluated on its own and its token states
 * pooled into one vector, as the model declares (embedding models only).
 */
export interface EmbeddingRequest {
  /** Unique per submission (the daemon uses the request id). */
  id: string;
  model: string;
  /** In request order; the result keeps it. */
  inputs: EmbeddingInput[];
  /**
   * The vector length asked for (absent: the model's own): the first `dimensions` values, normalized
   * again, as a model trained for Matryoshka shortening is meant to be used. Whether the model was is
   * said nowhere in its GGUF: the coordinator asks for a shorter length only where its catalog says
   * so. Longer than the model's own is refused (invalid_request naming `dimensions`).
   */
  dimensions?: number | undefined;
}

export interface EmbeddingResult {
  /**
   * One vector per input, in input order, each `dimensions` long (the model's embedding length by
   * default) and L2-normalized (unit
   * length, as OpenAI's and llama-server's are: cosine similarity is then a dot product).
   */
  embeddings: Float32Array[];
  /**
   * Per input, the tokens evaluated: its text's tokens with the vocabulary's start and end tokens
   * (renderPromptTokens of the input), exactly what the coordinator counts each input to and bills.
   */
  promptTokens: number[];
}

/**
 * One input's embedding as soon as it is computed, in input order, never after `done` settles: the
 * daemon sends it at once, so a request of many inputs keeps its stream alive (the coordinator's
 * silence limit runs between chunks) and holds no vectors it has already sent.
 */
export interface EmbeddingEvent {
  index: number;
  vector: Float32Array;
  /** The input's tokens (as EmbeddingResult.promptTokens). */
  tokens: number;
}

/** A running embeddings request. */
export interface EmbeddingJob {
  /**
   * Resolves with every input's embedding; rejects with EngineError: after cancel() (or when the
   * engine stopped it: closing) with code "cancelled".
   */
  readonly done: Promise<EmbeddingResult>;
  /** Stops before the next input is evaluated (the one being evaluated finishes). Idempotent. */
  cancel(): void;
}

/**
 * How a model is stored: a GGUF file (the llama and native-llama engines), or an MLX checkpoint
 * directory as mlx-community publishes one (config.json, tokenizer files, *.safetensors; the mlx engine).
 */
export type ModelFormat = "gguf" | "mlx";

/** A model file (or checkpoint directory) the engine can load. */
export interface ModelFile {
  /** Public model id (what consumers put in `model`). */
  id: string;
  /** The GGUF file, or the MLX checkpoint's directory. */
  path: string;
  /** Absent: "gguf" (what every model was before MLX checkpoints). */
  format?: ModelFormat | undefined;
  /** Bytes of the file (of every file of a checkpoint). */
  sizeBytes: number;
  /** e.g. "Q8_0", "F16"; an MLX checkpoint's "MLX_4BIT", "MLX_8BIT" or its float type ("BF16"). */
  quantization: string;
  /**
   * Lowercase hex SHA-256 of the file; of a checkpoint, over its files (config/model-inventory.ts,
   * checkpointSha256). What Register calls the weight hash and challenges are checked against.
   */
  sha256: string;
  /** Architecture from the GGUF metadata (config.json's model_type), e.g. "qwen3". */
  architecture: string;
  /** The model's trained context length. */
  contextLength: number;
  /**
   * The embedding model its GGUF declares (a pooling type; embeddingModelOf), read with the rest of
   * the header by the inventory: what `embeds` and the auto engine's routing go by before the model
   * is loaded. Absent for a generative model (and a checkpoint).
   */
  embedding?: EmbeddingModel | undefined;
}

export interface EngineStats {
  /** Batch rows decoding now. */
  busySlots: number;
  /** Submitted generations waiting for a row. */
  queueDepth: number;
  /** Fraction of KV-cache cells in use, 0..1. */
  kvCacheUsage: number;
  /** Recent prompt-processing rate, tokens/s (0 before any measurement). */
  prefillTokensPerSecond: number;
  /** Recent per-row decode rate, tokens/s (0 before any measurement). */
  decodeTokensPerSecond: number;
  /** Models in memory. */
  loadedModels: string[];
  requestsCompleted: number;
  requestsFailed: number;
  tokensGenerated: number;
  /**
   * What an engine may add for the daemon's /metrics (the heartbeat carries none of it): batch rows
   * of the loaded models, KV-cache cells (tokens) in use and in all, prompt tokens evaluated, and the
   * seconds spent in prefill and in batched decode steps (with decodeSteps, so that Prometheus
   * computes rates over any window instead of trusting the moving averages above).
   */
  totalSlots?: number;
  kvCacheTokens?: number;
  kvCacheCapacityTokens?: number;
  promptTokensProcessed?: number;
  prefillSeconds?: number;
  decodeSeconds?: number;
  decodeSteps?: number;
}

/** One attempt to bring a model into memory, reported by the engine that made it. */
export interface ModelLoadEvent {
  model: string;
  /** loaded; failed; cancelled: unloaded (or the engine closed) while it was loading. */
  outcome: "loaded" | "failed" | "cancelled";
  /** From the start of vetting the file to the context being ready (or the failure). */
  seconds: number;
}

/**
 * What an engine reports as it works, for the daemon's metrics. Called synchronously; an observer
 * must not throw.
 */
export interface EngineObserver {
  /** A model load ended: counted where it happens, so loads on first use or after an idle unload count too. */
  modelLoad(event: ModelLoadEvent): void;
}

export type EngineErrorCode =
  | "context_length_exceeded"
  | "model_not_found"
  | "model_load_failed"
  | "invalid_request"
  | "engine_busy"
  | "engine_failed"
  /** An embedding job stopped by cancel() or by the engine closing (a generation says so in its result). */
  | "cancelled";

/** A typed engine failure; `httpStatus` is what a consumer would see. */
export class EngineError extends Error {
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    readonly httpStatus: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "EngineError";
  }
}

/** What an engine computes on: "cpu" when it uses no GPU. */
export type AcceleratorName = "cpu" | "metal" | "cuda" | "vulkan";

/** The device an engine computes on, as reported by the runtime it uses (never assumed). */
export interface EngineDevice {
  accelerator: AcceleratorName;
  /**
   * The GPUs it computes on, each with the memory it can hold models and KV cache in (on Apple
   * silicon: the unified memory Metal may use); empty on the CPU.
   */
  gpus: { name: string; memoryBytes: number }[];
}

export interface Engine {
  /** Backend name reported at register, e.g. "llama". */
  readonly backend: string;
  /**
   * The device models are loaded on (register, `doctor`, and the CPU refusal of `serve` read it).
   * An engine that would fall back to the CPU says "cpu": a GPU merely present is not reported.
   */
  device(): Promise<EngineDevice>;
  /** Loads a model (no-op when loaded). Untrusted files must not be able to crash the daemon. */
  load(model: ModelFile): Promise<void>;
  unload(modelId: string): Promise<void>;
  /**
   * Starts a generation. Throws EngineError synchronously-or-via-done for bad input; a prompt plus
   * maxTokens over the context limit is rejected with "context_length_exceeded" before any decoding.
   * `onToken` is called for each piece of text in order, never after `done` settles.
   */
  generate(request: GenerationRequest, onToken: (event: TokenEvent) => void): Generation;
  stats(): EngineStats;
  /**
   * The prompt + max_tokens limit of a loaded model when the engine set one lower than the model's
   * trained context (to fit memory); undefined when not loaded or not known.
   */
  contextLimit?(modelId: string): number | undefined;
  /** CPU threads a loaded model evaluates with (what "auto" chose); undefined when not loaded or not known. */
  threadsFor?(modelId: string): number | undefined;
  /**
   * Why this engine cannot serve `model` at all (its format), or undefined when it can: the daemon
   * asks before loading, so that a model of the wrong format is one clear line, not a load failure.
   */
  unsupported?(model: ModelFile): string | undefined;
  /**
   * Whether this engine enforces `sampling.grammar` for `model` (registered as the model's
   * "grammar" feature, so that the coordinator routes structured outputs only where they hold).
   */
  constrains(model: ModelFile): boolean;
  /**
   * Whether this engine computes `model`'s embeddings (registered as the model's "embeddings"
   * feature: /v1/embeddings is routed only where it holds). True only for an embedding model, one
   * whose GGUF declares a pooling type: a generative model's token states are not embeddings anyone
   * trained.
   */
  embeds(model: ModelFile): boolean;
  /**
   * Whether this engine reports log-probabilities for `model` (`sampling.logprobs`; registered as
   * the model's "logprobs" feature, so that the coordinator routes such requests only where they
   * hold). Absent: it reports none.
   */
  logprobs?(model: ModelFile): boolean;
  /**
   * Embeds each input of a request (absent: the engine computes no embeddings). Bad input fails
   * `done` with EngineError: a model that is not an embedding model or `dimensions` longer than the
   * model's own (invalid_request), an input longer than the context (context_length_exceeded),
   * before anything is evaluated.
   */
  embed?(request: EmbeddingRequest, onEmbedding?: (event: EmbeddingEvent) => void): EmbeddingJob;
  /** Cancels everything and releases native resources. */
  close(): Promise<void>;
  /** Sets (or clears) the one observer of this engine's work; engines without it report nothing. */
  observe?(observer: EngineObserver | undefined): void;
}
