/**
 * One generation on the llama engine: the engine-neutral part (text, stop strings, billing,
 * settlement) is GenerationJob's; here is what ties it to node-llama-cpp: the row it runs on, its
 * token iterator, and its sampling (each generator owns a llama.cpp sampler chain: temperature, top-k,
 * top-p, seeded dist, optional presence/frequency penalties over the tokens it generated).
 */

import type {
  LlamaContextSequence,
  LlamaGrammarEvaluationState,
  SequenceEvaluateOptions,
  Token,
  TokenBias,
} from "node-llama-cpp";
import type { GenerationRequest, TokenEvent } from "../engine.js";
import { GenerationJob } from "../generation-job.js";

export { invalid, type Phase, validateRequest } from "../generation-job.js";

/** A batch row: one sequence of the model's context, with its own KV cells, and the job on it. */
export interface Row {
  readonly index: number;
  readonly sequence: LlamaContextSequence;
  job: Job | undefined;
}

/** One submitted generation. */
export class Job extends GenerationJob {
  /** The tokens sampled so far, which the penalties look back over. */
  readonly generated: Token[] = [];
  row: Row | undefined;
  iterator: AsyncGenerator<Token, void, undefined | Token | Token[]> | undefined;
  /** Prompt tokens not evaluated yet (phase "prefill"), fed in fixed-size chunks. */
  prefillOffset = 0;
  /** The request's grammar, advanced by node-llama-cpp's sampler with every token it samples. */
  grammarState: LlamaGrammarEvaluationState | undefined;
  /** The request's logit biases, and under a grammar the fragments banned (ModelRunner.tokenBias). */
  tokenBias: TokenBias | undefined;

  constructor(
    request: GenerationRequest,
    onToken: (event: TokenEvent) => void,
    private readonly onCancel: (job: Job) => void,
  ) {
    super(request, onToken);
  }

  protected cancelled(): void {
    this.onCancel(this);
  }

  /** The sampler settings of this job's generator: the request's, with its seed. */
  evaluateOptions(): SequenceEvaluateOptions {
    const s = this.request.sampling;
    const options: SequenceEvaluateOptions = {
      temperature: s.temperature,
      topK: s.topK,
      topP: s.topP,
      minP: 0,
      seed: this.seed,
    };
    if (this.grammarState) options.grammarEvaluationState = this.grammarState;
    if (this.tokenBias) options.tokenBias = this.tokenBias;
    if (s.presencePenalty || s.frequencyPenalty) {
      options.repeatPenalty = {
        punishTokens: () => this.generated.slice(-1024),
        maxPunishTokens: Math.min(1024, Math.max(64, s.maxTokens)),
        penalty: 1,
        presencePenalty: s.presencePenalty ?? 0,
        frequencyPenalty: s.frequencyPenalty ?? 0,
      };
    }
    return options;
  }

  override accept(token: Token): "stop" | "length" | undefined {
    this.generated.push(token);
    return super.accept(token);
  }
}
