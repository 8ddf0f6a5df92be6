/**
 * Embeddings on the llama engine: node-llama-cpp's embedding context of a loaded embedding model (one
 * whose GGUF declares a pooling type), and the jobs waiting for it.
 *
 * - The context is made on first use, not at load: most requests a provider serves are generations,
 *   and an embedding context holds a KV cache and compute buffers of its own. It is sized as a row of
 *   the model's generation context (at most the trained context, already fitted to the memory
 *   budget), evaluates with the model's threads, and its batch is the whole context: llama.cpp pools
 *   the states of one ubatch, so an input split over two would be pooled from its tail alone.
 * - Each input is evaluated alone on the context's one sequence (cleared before every input), from
 *   the tokens renderPromptTokens gives it: the text's tokens with the vocabulary's start and end
 *   tokens, which node-llama-cpp then finds there and does not add again. Those are the tokens the
 *   coordinator counts the input to, so the count reported is the count billed.
 * - Jobs take turns input by input (round robin), each job's inputs in order: a request of 2,048
 *   inputs does not hold a one-input request back for all of them. A cancelled job stops before its
 *   next input.
 * - Vectors are L2-normalized, as OpenAI's and llama-server's are.
 */
import type { EmbeddingModel } from "@darkbloom/models/embeddings";
import type { LlamaEmbeddingContext, LlamaModel, Token } from "node-llama-cpp";
import {
  type EmbeddingEvent,
  type EmbeddingJob,
  type EmbeddingRequest,
  type EmbeddingResult,
  EngineError,
  type ModelFile,
} from "../engine.js";
import { invalid } from "../generation-job.js";
import { type EngineMeters, errorMessage } from "../meters.js";

const cancelled = () => new EngineError("cancelled", "the embeddings were cancelled", 503);

/** Checks an embeddings request's shape (what the type promises, for callers that are not typed). */
export function validateEmbeddingRequest(request: EmbeddingRequest): void {
  if (!request || typeof request.id !== "string" || typeof request.model !== "string") {
    throw invalid("an embeddings request needs an id and a model");
  }
  const { inputs, dimensions } = request;
  if (!Array.isArray(inputs) || inputs.length === 0) throw invalid("'input' must not be empty");
  for (const input of inputs) {
    if (input?.kind !== "embedding" || typeof input.text !== "string" || input.text === "") {
      throw invalid("each input must be a non-empty text");
    }
  }
  if (dimensions !== undefined && (!Number.isSafeInteger(dimensions) || dimensions < 1)) {
    throw invalid("'dimensions' must be a positive integer");
  }
}

/** One embeddings request on the engine: its inputs' tokens, the vectors so far, and its settlement. */
export class EmbeddingTask implements EmbeddingJob {
  readonly done: Promise<EmbeddingResult>;
  settled = false;
  /** Each input's tokens (set when the task is admitted). */
  tokens: Token[][] = [];
  /** The vectors of the inputs evaluated so far, in input order. */
  readonly embeddings: Float32Array[] = [];
  private resolveDone!: (result: EmbeddingResult) => void;
  private rejectDone!: (err: unknown) => void;

  constructor(
    readonly request: EmbeddingRequest,
    private readonly meters: EngineMeters,
    private readonly onCancel: (task: EmbeddingTask) => void,
    private readonly onEmbedding?: (event: EmbeddingEvent) => void,
  ) {
    this.done = new Promise<EmbeddingResult>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // A caller that never awaits `done` must not crash the daemon with an unhandled rejection.
    this.done.catch(() => {});
  }

  cancel(): void {
    if (this.settled) return;
    this.fail(cancelled());
    this.onCancel(this);
  }

  /** Fails it (counted as failed, or as cancelled), an EngineError as it is, anything else engine_failed. */
  fail(err: unknown): void {
    if (this.settled) return;
    this.settled = true;
    const error =
      err instanceof EngineError
        ? err
        : new EngineError("engine_failed", `embedding failed: ${errorMessage(err)}`, 500, { cause: err });
    if (error.code === "cancelled") this.meters.counters.requestsCancelled++;
    else this.meters.counters.requestsFailed++;
    this.rejectDone(error);
  }

  /** Records the next input's vector and tells the caller at once. */
  add(vector: Float32Array): void {
    const index = this.embeddings.length;
    this.embeddings.push(vector);
    this.onEmbedding?.({ index, vector, tokens: this.tokens[index]?.length ?? 0 });
  }

  /** Resolves it once every input has its vector. */
  complete(): void {
    if (this.settled) return;
    this.settled = true;
    this.meters.counters.requestsCompleted++;
    this.resolveDone({
      embeddings: this.embeddings,
      promptTokens: this.tokens.map((t) => t.length),
    });
  }
}

/** What the embedding runner needs of its model and engine. */
export interface EmbeddingRunnerParts {
  file: ModelFile;
  model: LlamaModel;
  embedding: EmbeddingModel;
  /** Tokens of the context (a row of the model's generation context). */
  contextSize: number;
  threads: number;
  /** Jobs queued or running at most; more are refused (engine_busy). */
  maxJobs: number;
  meters: EngineMeters;
  /** The runner has nothing left to do: the engine may unload its model after the idle time. */
  onIdle: () => void;
}

/** A loaded embedding model's embedding context and its jobs. */
export class EmbeddingRunner {
  readonly embedding: EmbeddingModel;
  /** Jobs with inputs left, the next to evaluate first. */
  private readonly queue: EmbeddingTask[] = [];
  private context: Promise<LlamaEmbeddingContext> | undefined;
  private running = false;
  private loopDone: Promise<void> = Promise.resolve();
  /** Set when its model is being dropped: nothing more is admitted. */
  private ended = false;

  constructor(private readonly parts: EmbeddingRunnerParts) {
    this.embedding = parts.embedding;
  }

  /** The longest input, in tokens: node-llama-cpp refuses one that fills the whole context. */
  get maxInputTokens(): number {
    return this.parts.contextSize - 1;
  }

  get idle(): boolean {
    return !this.running && this.queue.length === 0;
  }

  /** Jobs waiting for their turn (the one being evaluated is not counted). */
  get waiting(): number {
    return Math.max(0, this.queue.filter((t) => !t.settled).length - (this.running ? 1 : 0));
  }

  /**
   * Admits a task: checks it against the model (dimensions, each input's length, the queue bound)
   * with its inputs' tokens (`render`), then queues it. Throws EngineError for what it refuses.
   */
  admit(task: EmbeddingTask, render: (input: EmbeddingRequest["inputs"][number]) => Token[]): void {
    const { request } = task;
    const { dimensions } = this.embedding;
    if (request.dimensions !== undefined && request.dimensions > dimensions) {
      throw invalid(`'dimensions' must be at most ${dimensions} (this model's embedding length)`);
    }
    const tokens = request.inputs.map(render);
    for (const [i, t] of tokens.entries()) {
      if (t.length > this.maxInputTokens) {
        const which = request.inputs.length === 1 ? "the input" : `input[${i}]`;
        throw new EngineError(
          "context_length_exceeded",
          `This model's maximum context length is ${this.maxInputTokens} tokens per input. ` +
            `However, ${which} has ${t.length} tokens. Please shorten it.`,
          400,
        );
      }
    }
    if (this.ended) throw cancelled();
    if (this.queue.filter((t) => !t.settled).length >= this.parts.maxJobs) {
      throw new EngineError(
        "engine_busy",
        `${this.queue.length} embeddings requests are waiting for ${this.parts.file.id}`,
        503,
      );
    }
    task.tokens = tokens;
    this.queue.push(task);
    this.kick();
  }

  /** Drops a task that was cancelled while it waited. */
  forget(task: EmbeddingTask): void {
    const i = this.queue.indexOf(task);
    // The task being evaluated stays: the loop drops it when its input returns.
    if (i > 0 || (i === 0 && !this.running)) this.queue.splice(i, 1);
  }

  /**
   * Ends every job (failing them with `reason()`, or without one cancelling them) and admits nothing
   * more; resolves when the input being evaluated has returned.
   */
  end(reason: (() => EngineError) | undefined): Promise<void> {
    this.ended = true;
    for (const task of this.queue) task.fail(reason ? reason() : cancelled());
    return this.loopDone;
  }

  /** Frees the embedding context (after end()); never throws. */
  async dispose(): Promise<void> {
    this.ended = true;
    await this.loopDone;
    const context = await this.context?.catch(() => undefined);
    this.context = undefined;
    await context?.dispose().catch(() => {});
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    this.loopDone = this.loop().finally(() => {
      this.running = false;
      this.parts.onIdle();
    });
  }

  private async loop(): Promise<void> {
    for (;;) {
      const task = this.queue[0];
      if (task === undefined) return;
      if (task.settled) {
        this.queue.shift();
        continue;
      }
      const index = task.embeddings.length;
      const tokens = task.tokens[index] as Token[];
      let vector: Float32Array;
      try {
        const context = await this.getContext();
        const started = performance.now();
        const embedding = await context.getEmbeddingFor(tokens);
        this.parts.meters.prefillChunk(tokens.length, (performance.now() - started) / 1000);
        vector = normalized(embedding.vector, this.embedding.dimensions, task.request.dimensions);
      } catch (err) {
        this.queue.shift();
        task.fail(err);
        continue;
      }
      this.queue.shift();
      // Cancelled (or its model dropped) while its input was evaluated: the vector is not wanted.
      if (task.settled) continue;
      task.add(vector);
      if (task.embeddings.length === task.tokens.length) task.complete();
      else this.queue.push(task);
    }
  }

  /** The embedding context, made on first use; a failed attempt is forgotten so the next one retries. */
  private getContext(): Promise<LlamaEmbeddingContext> {
    const { model, contextSize, threads } = this.parts;
    this.context ??= model
      .createEmbeddingContext({ contextSize, batchSize: contextSize, threads })
      .catch((err: unknown) => {
        this.context = undefined;
        throw new EngineError(
          "engine_failed",
          `the embedding context of ${this.parts.file.id} cannot be made: ${errorMessage(err)}`,
          500,
          { cause: err },
        );
      });
    return this.context;
  }
}

/**
 * The vector's first `kept` values (all of them by default: Matryoshka shortening keeps a prefix)
 * scaled to unit length, in binary32; throws for a vector of another length or no direction.
 */
function normalized(values: readonly number[], dimensions: number, kept = dimensions): Float32Array {
  if (values.length !== dimensions) {
    throw new Error(
      `the model gave a vector of ${values.length} values; its embedding length is ${dimensions}`,
    );
  }
  let sum = 0;
  for (let i = 0; i < kept; i++) sum += (values[i] as number) ** 2;
  const norm = Math.sqrt(sum);
  if (!Number.isFinite(norm) || norm === 0) throw new Error("the model gave a vector without a direction");
  const out = new Float32Array(kept);
  for (let i = 0; i < kept; i++) out[i] = (values[i] as number) / norm;
  return out;
}
