/**
 * One generation on an engine over a native core (native-llama, mlx): GenerationJob's text, stop
 * strings and billing, fed by the events of a native scheduler (@darkbloom/native/llama or
 * @darkbloom/native/mlx, one contract). The scheduler samples, stops at an
 * end-of-generation token ("stop", the token not delivered) and at maxTokens ("length"); stop strings
 * are matched here, on the decoded text, and end the request with scheduler.cancel.
 */
import type { NativeSamplingOptions, TokenLogprobs } from "@darkbloom/native/llama";
import { EngineError, type GenerationRequest, type TokenEvent } from "../engine.js";
import { GenerationJob } from "../generation-job.js";
import type { SampledLogprob } from "../token-logprobs.js";
import type { CoreSchedulerEvent } from "./scheduler-runner.js";

/** The native scheduler's seeds are 0 to 2^32-2 (2^32-1 means "random" to llama.cpp). */
const SEED_MODULUS = 2 ** 32 - 1;
/** The penalties' look-back, as the llama engine sets it (job.ts: at least 64, at most 1024 tokens). */
const MAX_PENALTY_WINDOW = 1024;

/** What a job needs of its scheduler and engine. */
export interface NativeJobHost {
  /** Stops the request in the scheduler (its row is freed at the next step boundary). */
  cancel(job: NativeJob): void;
  /** The job settled: counted and forgotten. */
  settled(job: NativeJob, outcome: "completed" | "cancelled" | "failed"): void;
  /** One more sampled token, for the engine's counters. */
  tokenGenerated(): void;
}

export class NativeJob extends GenerationJob {
  /** The scheduler's id of this request (engine-unique: a request id may come back while its old run drains). */
  schedulerId = "";
  /** Submitted to the scheduler (until then cancel() has nothing to stop there). */
  submitted = false;
  /** A token's piece (its bytes, control tokens as nothing): set at submit for a request with logprobs. */
  piece: ((token: number) => Uint8Array) | undefined;

  constructor(
    request: GenerationRequest,
    onToken: (event: TokenEvent) => void,
    private readonly host: NativeJobHost,
  ) {
    super(request, onToken);
  }

  protected cancelled(): void {
    if (this.submitted) this.host.cancel(this);
    this.host.settled(this, "cancelled");
  }

  /**
   * The scheduler's sampling for the request, as the llama engine maps SamplingOptions (job.ts):
   * temperature, top-k, top-p, no min-p, the seed, and presence/frequency penalties (repeat penalty
   * off) over the last min(1024, max(64, maxTokens)) generated tokens (never the prompt's, as in
   * the llama engine), the logit biases and the grammar.
   */
  sampling(): NativeSamplingOptions {
    const s = this.request.sampling;
    const options: NativeSamplingOptions = {
      temperature: s.temperature,
      topK: s.topK,
      topP: s.topP,
      minP: 0,
      seed: this.seed % SEED_MODULUS,
    };
    if (this.grammar !== undefined) options.grammar = this.grammar;
    if (s.logprobs !== undefined) options.logprobs = s.logprobs;
    if (s.logitBias !== undefined && s.logitBias.length > 0) options.logitBias = s.logitBias;
    if (s.presencePenalty || s.frequencyPenalty) {
      options.repeatPenalty = 1;
      options.presencePenalty = s.presencePenalty ?? 0;
      options.frequencyPenalty = s.frequencyPenalty ?? 0;
      options.penaltyLastN = Math.min(MAX_PENALTY_WINDOW, Math.max(64, s.maxTokens));
    }
    return options;
  }

  /** A token's figures as the generation takes them (undefined: the request asked for none). */
  private scored(token: number, figures: TokenLogprobs | undefined): SampledLogprob | undefined {
    return figures && this.piece ? scoredToken(this.piece, token, figures) : undefined;
  }

  /** One scheduler event for this request. */
  onEvent(event: CoreSchedulerEvent): void {
    if (this.settled) return;
    if (event.kind === "tokens") {
      if (this.phase !== "decoding") this.phase = "decoding";
      for (const [i, token] of event.tokens.entries()) {
        this.host.tokenGenerated();
        let end: "stop" | "length" | undefined;
        try {
          end = this.accept(token, this.scored(token, event.logprobs?.[i]));
        } catch (err) {
          // Thrown here it would escape from the core's callback: the request fails instead.
          this.host.cancel(this);
          this.fail(
            err instanceof EngineError
              ? err
              : new EngineError("engine_failed", `generation failed: ${err}`, 500),
          );
          this.host.settled(this, "failed");
          return;
        }
        // "length" is the scheduler's to report (its done event follows the last token).
        if (end === "stop") {
          this.host.cancel(this);
          this.finish("stop");
          this.host.settled(this, "completed");
          return;
        }
      }
    } else if (event.kind === "done") {
      if (event.reason === "cancelled") {
        // Cancelled in the scheduler without our asking: the scheduler (or its model) was closed.
        this.finish("cancelled");
        this.host.settled(this, "cancelled");
      } else {
        this.finish(this.flushText(event.reason));
        this.host.settled(this, "completed");
      }
    } else {
      this.fail(nativeEngineError(event.code, event.message));
      this.host.settled(this, "failed");
    }
  }
}

/** The core's figures for a token, with the pieces of the token and its alternatives. */
function scoredToken(
  piece: (token: number) => Uint8Array,
  token: number,
  figures: TokenLogprobs,
): SampledLogprob {
  return {
    bytes: piece(token),
    logprob: figures.logprob,
    top: Array.from(figures.topTokens, (t, k) => ({ bytes: piece(t), logprob: figures.topLogprobs[k]! })),
  };
}

/**
 * The EngineError of a native error code (an error event's, or a thrown addon error's): a full queue
 * is engine_busy (503) and a context overrun context_length_exceeded (400), as the llama engine says
 * them; anything else is the engine's failure.
 */
export function nativeEngineError(code: string | undefined, message: string, cause?: unknown): EngineError {
  const options = cause === undefined ? undefined : { cause };
  if (code === "busy") return new EngineError("engine_busy", message, 503, options);
  if (code === "context_length_exceeded")
    return new EngineError("context_length_exceeded", message, 400, options);
  // What the request asked that the core cannot do (a grammar that does not parse; MLX and a grammar).
  if (code === "bad_input") return new EngineError("invalid_request", message, 400, options);
  return new EngineError("engine_failed", `generation failed: ${message}`, 500, options);
}
