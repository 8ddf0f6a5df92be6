/**
 * What every engine's generation has in common, whatever decodes it: the request's validation, the
 * rendered prompt, the incremental detokenizer (UTF-8 safe) and the stop matcher, which holds text
 * back across token boundaries until it cannot begin a stop string, the billed count (the model
 * tokenizer's count of the text emitted) and the settlement of `done`. Each engine subclasses it with
 * what ties a generation to its decoder (a node-llama-cpp row and iterator; a native scheduler id).
 */
import { randomInt } from "node:crypto";
import {
  choiceCompletionTokens,
  MAX_TOP_LOGPROBS,
  type ModelTokenizer,
  type RenderedPrompt,
} from "@darkbloom/models";
import { splitToolOutput, type ToolCallSyntax, toolCallGrammar } from "@darkbloom/models/tools";
import {
  EngineError,
  type Generation,
  type GenerationRequest,
  type GenerationResult,
  type SamplingOptions,
  type TokenEvent,
  type TokenLogprob,
} from "./engine.js";
import { type IncrementalDetokenizer, StopMatcher } from "./text.js";
import { LogprobAligner, type SampledLogprob } from "./token-logprobs.js";

export type Phase = "preparing" | "queued" | "prefill" | "decoding" | "finished";

export const invalid = (message: string): EngineError => new EngineError("invalid_request", message, 400);

/** The context gate's refusal: prompt + max_tokens over the per-request limit (OpenAI's wording). */
export function contextLengthExceeded(limit: number, promptTokens: number, maxTokens: number): EngineError {
  return new EngineError(
    "context_length_exceeded",
    `This model's maximum context length is ${limit} tokens. However, you requested ` +
      `${promptTokens + maxTokens} tokens (${promptTokens} in the prompt, ${maxTokens} for the completion).`,
    400,
  );
}

/** Checks a request's shape and sampling values; returns the seed to use (0 to 2^32-1). */
export function validateRequest(request: GenerationRequest): number {
  const s: SamplingOptions | undefined = request?.sampling;
  if (!request || typeof request.id !== "string" || typeof request.model !== "string" || !s) {
    throw invalid("request must have an id, a model and sampling options");
  }
  const input = request.input;
  if (input?.kind === "text") {
    if (typeof input.prompt !== "string") throw invalid("prompt must be a string");
  } else if (input?.kind === "chat") {
    if (!Array.isArray(input.messages) || input.messages.length === 0)
      throw invalid("messages must not be empty");
    const roles = new Set(["system", "user", "assistant", "developer", "tool", "function"]);
    for (const m of input.messages) {
      if (!m || !roles.has(m.role) || typeof m.content !== "string")
        throw invalid("each message needs a role and text content");
    }
  } else {
    throw invalid('input.kind must be "chat" or "text"');
  }
  if (!Number.isFinite(s.temperature) || s.temperature < 0)
    throw invalid("temperature must be a number >= 0");
  if (!Number.isFinite(s.topP) || s.topP <= 0 || s.topP > 1) throw invalid("top_p must be in (0, 1]");
  if (!Number.isInteger(s.topK) || s.topK < 0) throw invalid("top_k must be an integer >= 0");
  if (!Number.isInteger(s.maxTokens) || s.maxTokens < 1) throw invalid("max_tokens must be an integer >= 1");
  if (!Array.isArray(s.stop) || s.stop.some((x) => typeof x !== "string"))
    throw invalid("stop must be a list of strings");
  if (s.stop.length > 16) throw invalid("at most 16 stop sequences are allowed");
  if (s.logitBias !== undefined) {
    const ok =
      Array.isArray(s.logitBias) &&
      s.logitBias.every(
        (pair) =>
          Array.isArray(pair) &&
          Number.isSafeInteger(pair[0]) &&
          pair[0] >= 0 &&
          typeof pair[1] === "number" &&
          !Number.isNaN(pair[1]) &&
          pair[1] !== Number.POSITIVE_INFINITY,
      );
    if (!ok) throw invalid("logit_bias must be [token, bias] pairs: tokens >= 0, biases finite or -Infinity");
  }
  if (s.grammar !== undefined && (typeof s.grammar !== "string" || s.grammar.length === 0))
    throw invalid("grammar must be a non-empty string");
  if (s.tools !== undefined) {
    if (request.input.kind !== "chat") throw invalid("tools need a chat input");
    if (s.grammar !== undefined) throw invalid("a request has either a grammar or tools, not both");
    if (!Array.isArray(s.tools.functions) || s.tools.functions.length === 0)
      throw invalid("tools must offer at least one function");
  }
  if (s.logprobs !== undefined) {
    if (!Number.isInteger(s.logprobs) || s.logprobs < 0 || s.logprobs > MAX_TOP_LOGPROBS)
      throw invalid(`logprobs must be an integer from 0 to ${MAX_TOP_LOGPROBS} (the alternatives per token)`);
    if (s.tools !== undefined) throw invalid("logprobs cannot be served together with tools");
  }
  for (const p of [s.presencePenalty, s.frequencyPenalty]) {
    if (p !== undefined && (!Number.isFinite(p) || p < -2 || p > 2))
      throw invalid("penalties must be in [-2, 2]");
  }
  if (s.seed === undefined || s.seed === null) return randomInt(0, 2 ** 32);
  if (!Number.isSafeInteger(s.seed)) throw invalid("seed must be an integer");
  return ((s.seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
}

/** One submitted generation: its text, its billing and how it settles. */
export abstract class GenerationJob implements Generation {
  readonly done: Promise<GenerationResult>;
  phase: Phase = "preparing";
  settled = false;
  prompt: RenderedPrompt | undefined;
  promptTokens = 0;
  /** Tokens sampled so far (what max_tokens limits). */
  completionTokens = 0;
  /** Counts the emitted text at the end (set with the detokenizer when the job starts decoding). */
  tokenizer: ModelTokenizer | undefined;
  /** Everything emitted, for the billed count: the tokenizer's count of the text as delivered. */
  private emitted = "";
  detokenizer: IncrementalDetokenizer | undefined;
  stop: StopMatcher;
  /** Tokens generated since the last onToken event. */
  unreportedTokens = 0;
  /** Sampling seed (the request's, or a random one). */
  seed = 0;
  /**
   * The grammar the output is decoded under: the request's, or with `tools` the calls' grammar in
   * the model's syntax (set by useTools before the job is submitted). Engines read it here.
   */
  grammar: string | undefined;
  /** With `tools`: the model's call syntax, to split the output at the end. */
  private toolSyntax: ToolCallSyntax | undefined;
  /** With `sampling.logprobs`: ties each sampled token's figures to the text emitted. */
  private readonly aligner: LogprobAligner | undefined;
  private resolveDone!: (result: GenerationResult) => void;
  private rejectDone!: (err: unknown) => void;

  constructor(
    readonly request: GenerationRequest,
    readonly onToken: (event: TokenEvent) => void,
  ) {
    this.done = new Promise<GenerationResult>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // A consumer that never awaits `done` must not crash the daemon with an unhandled rejection.
    this.done.catch(() => {});
    this.stop = new StopMatcher(request?.sampling?.stop ?? []);
    this.grammar = request?.sampling?.grammar;
    this.aligner = request?.sampling?.logprobs === undefined ? undefined : new LogprobAligner();
  }

  /**
   * Readies a `tools` request for the model it runs on: the calls' grammar in the model's syntax
   * (undefined: its template has none the output can show, and the request is refused).
   */
  useTools(syntax: ToolCallSyntax | undefined): void {
    const tools = this.request.sampling.tools;
    if (tools === undefined) return;
    if (syntax === undefined) {
      throw invalid(
        `model ${this.request.model} has no function-call syntax in its chat template: it cannot serve 'tools'`,
      );
    }
    this.toolSyntax = syntax;
    this.grammar = toolCallGrammar(syntax, tools);
  }

  /** Called once when a consumer cancels an unsettled job (after it settled "cancelled"): free its row. */
  protected abstract cancelled(): void;

  cancel(): void {
    if (this.settled) return;
    this.finish("cancelled");
    this.cancelled();
  }

  finish(reason: GenerationResult["finishReason"]): void {
    if (this.settled) return;
    this.settled = true;
    this.phase = "finished";
    const result: GenerationResult = {
      promptTokens: this.promptTokens,
      completionTokens: choiceCompletionTokens(
        this.tokenizer?.countText(this.emitted) ?? 0,
        this.request.sampling.maxTokens,
      ),
      generatedTokens: this.completionTokens,
      finishReason: reason,
    };
    const tools = this.request.sampling.tools;
    if (tools !== undefined && this.toolSyntax !== undefined) {
      const split = splitToolOutput(
        this.emitted,
        this.toolSyntax,
        tools.functions.map((f) => f.name),
      );
      result.tools = { content: split.content, calls: split.calls };
      if (reason === "stop" && split.state === "complete") result.finishReason = "tool_calls";
    }
    this.resolveDone(result);
  }

  fail(err: EngineError): void {
    if (this.settled) return;
    this.settled = true;
    this.phase = "finished";
    this.rejectDone(err);
  }

  emit(text: string, logprobs?: TokenLogprob[]): void {
    if (this.settled || (text.length === 0 && !logprobs?.length)) return;
    const event: TokenEvent = { text, tokens: this.unreportedTokens };
    if (logprobs) event.logprobs = logprobs;
    this.unreportedTokens = 0;
    this.emitted += text;
    this.onToken(event);
  }

  /**
   * Takes one sampled token (not an end-of-generation one): counts it, decodes it and emits whatever
   * text the stop matcher releases. `scored`: its piece and log-probabilities, which an engine must
   * report for a request with `sampling.logprobs`. Returns how the job ends with it: "stop" when a
   * stop string matched (the text before it is already out), "length" when max_tokens is reached
   * (held text still to flush), undefined while it goes on.
   */
  accept(token: number, scored?: SampledLogprob): "stop" | "length" | undefined {
    this.completionTokens++;
    this.unreportedTokens++;
    if (this.aligner) {
      if (!scored) throw new EngineError("engine_failed", "the engine reported no logprobs for a token", 500);
      this.aligner.sampled(scored);
    }
    const piece = this.detokenizer!.push(token);
    if (piece !== "") {
      this.aligner?.decoded(piece);
      const { emit, stopped } = this.stop.push(piece);
      this.release(emit);
      if (stopped) {
        this.endText(true);
        return "stop";
      }
    }
    return this.completionTokens >= this.request.sampling.maxTokens ? "length" : undefined;
  }

  /**
   * Emits the text held back at the end (an incomplete character, a possible stop-string prefix);
   * returns the finish reason, "stop" when that text completed a stop string.
   */
  flushText(reason: "stop" | "length"): "stop" | "length" {
    const rest = this.detokenizer?.flush() ?? "";
    if (rest !== "") this.aligner?.decoded(rest);
    const { emit, stopped } = this.stop.push(rest);
    this.release(emit);
    if (stopped) {
      this.endText(true);
      return "stop";
    }
    this.release(this.stop.flush());
    this.endText(false);
    return reason;
  }

  /** Text the stop matcher let out: emitted now, or with logprobs once it ends on a token boundary. */
  private release(text: string): void {
    if (!this.aligner) {
      this.emit(text);
      return;
    }
    const out = this.aligner.release(text);
    if (out) this.emit(out.text, out.entries);
  }

  /** The text ended (`stopped`: at a stop string): the last of it and its tokens' entries go out. */
  private endText(stopped: boolean): void {
    const out = this.aligner?.end(stopped);
    if (out) this.emit(out.text, out.entries);
  }
}
