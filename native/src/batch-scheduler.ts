/**
 * What the native batching cores (llama.ts, mlx.ts) share: the request, event and stats types of
 * their scheduler contract, and the JS side of a scheduler (one listener per request, events
 * dispatched in step order, a queued cancel completed at once). Each backend adds its options, its
 * error codes and its model class.
 */
import type { ErrorCodes } from "./coded-error.js";

/** Every field optional; each filter's default is "off", temperature's is 1. */
export interface NativeSamplingOptions {
  /** 0 = greedy. */
  temperature?: number;
  /** 0 = off. */
  topK?: number;
  /** 1 = off. */
  topP?: number;
  /** 0 = off. */
  minP?: number;
  /** 0 to 2^32-2; absent: a random seed. Each row has its own RNG. */
  seed?: number;
  /** 1 = off. Penalties look back over the generated tokens only (the last penaltyLastN of them). */
  repeatPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** Default 64. */
  penaltyLastN?: number;
  /** [token, bias] pairs, added to the logits; -Infinity bans a token. */
  logitBias?: ReadonlyArray<readonly [number, number]>;
  /**
   * A GBNF grammar (root rule `root`) the output must stay in; at most 1 MiB. The llama core masks
   * every token it does not allow (a grammar that does not parse is refused at submit, bad_input);
   * the MLX core refuses any grammar (bad_input).
   */
  grammar?: string;
  /**
   * Log-probabilities for every generated token (the tokens event's `logprobs`): 0 = the sampled
   * token's only; 1 to 20 = also that many most likely alternatives. Absent: none. They are of the
   * model's raw distribution, log_softmax of the logits before logit bias, penalties, the grammar,
   * temperature and the top-k/top-p/min-p filters (vLLM's default, llama-server's
   * post_sampling_probs false), so they change nothing sampled, and a banned or filtered token keeps
   * its raw log-probability. Anything but an integer from 0 to 20 is bad_input.
   */
  logprobs?: number;
}

/** One generated token's log-probabilities (natural log; of the raw distribution, see `logprobs`). */
export interface TokenLogprobs {
  /** The sampled token's. */
  logprob: number;
  /** As many most likely tokens as asked for, most likely first (equally likely: lowest id first). */
  topTokens: Int32Array;
  /** Their log-probabilities, aligned with topTokens. */
  topLogprobs: Float32Array;
}

export interface GenerateRequest {
  /** Unique among this scheduler's queued and running requests. */
  id: string;
  prompt: Int32Array;
  maxTokens: number;
  sampling?: NativeSamplingOptions;
}

export type FinishReason = "stop" | "length" | "cancelled";

/** A request's events: its tokens as they are sampled, then exactly one done or error. */
export type BatchSchedulerEvent<C extends string> =
  | {
      kind: "tokens";
      tokens: Int32Array;
      /** With sampling.logprobs: one entry per token, aligned with `tokens`; absent otherwise. */
      logprobs?: ReadonlyArray<TokenLogprobs>;
    }
  | { kind: "done"; reason: FinishReason; promptTokens: number; generatedTokens: number }
  | { kind: "error"; code: C; message: string };

/** The options every backend's scheduler takes. */
export interface BatchSchedulerOptions {
  /** The most sequences decoding at once (1 to 256). Default 1. */
  rows?: number;
  /** KV cells per row: prompt + maxTokens of a request must fit. Default: the model's training context. */
  contextPerRow?: number;
  /** Prompt tokens per prefill chunk. Default 512. */
  prefillChunk?: number;
  /** Submissions that may wait for a row; one more throws `busy`. Default 64. */
  queueDepth?: number;
  /**
   * The least time between two deliveries of tokens to JS, in microseconds (0 to 1,000,000). Each
   * delivery wakes the JS thread at a cost to the engine thread; steps faster than this are delivered
   * a few at a time, a row's tokens in one event. A row's first token and its done or error event are
   * never held. 0: every step's events at once. Default 1000.
   */
  deliveryIntervalUs?: number;
}

export interface SchedulerStats {
  busyRows: number;
  queued: number;
  rows: number;
  kvCellsUsed: number;
  kvCells: number;
  promptTokensProcessed: number;
  prefillSeconds: number;
  decodeSeconds: number;
  decodeSteps: number;
  tokensGenerated: number;
}

/** An addon scheduler's event, with the request it belongs to. */
export type RawSchedulerEvent<C extends string> = { id: string } & BatchSchedulerEvent<C>;

/** The addon's scheduler object, as both addons define it. */
export interface RawScheduler<S extends SchedulerStats = SchedulerStats> {
  submit(
    id: string,
    prompt: Int32Array,
    maxTokens: number,
    sampling: NativeSamplingOptions | undefined,
  ): void;
  cancel(id: string): "queued" | "running" | "unknown";
  stats(): S;
  close(): Promise<void>;
}

export class NativeScheduler<C extends string, S extends SchedulerStats = SchedulerStats> {
  private raw: RawScheduler<S> | undefined;
  private readonly listeners = new Map<
    string,
    { onEvent: (event: BatchSchedulerEvent<C>) => void; promptTokens: number }
  >();
  private closing: Promise<void> | undefined;

  /** @internal made by the backend's model class (createScheduler) */
  constructor(
    private readonly codes: ErrorCodes<C | "bad_input" | "closed">,
    private readonly onClosed: () => void,
  ) {}

  /** @internal */
  attach(raw: RawScheduler<S>): void {
    this.raw = raw;
  }

  /**
   * Queues a request; `onEvent` gets its tokens as they are sampled, then exactly one "done" or
   * "error". Throws (synchronously) bad_input, context_length_exceeded, busy or closed.
   */
  submit(request: GenerateRequest, onEvent: (event: BatchSchedulerEvent<C>) => void): void {
    if (this.listeners.has(request.id))
      throw this.codes.coded("bad_input", `a request with id ${request.id} is already submitted`);
    this.scheduler().submit(request.id, request.prompt, request.maxTokens, request.sampling);
    this.listeners.set(request.id, { onEvent, promptTokens: request.prompt.length });
  }

  /**
   * Cancels a request: a queued one completes "cancelled" at once, a running one at the next step
   * boundary (its row is freed then). Unknown or finished ids are ignored.
   */
  cancel(id: string): void {
    const listener = this.listeners.get(id);
    if (!listener) return;
    if (this.scheduler().cancel(id) === "queued") {
      this.listeners.delete(id);
      this.emit(listener.onEvent, {
        kind: "done",
        reason: "cancelled",
        promptTokens: listener.promptTokens,
        generatedTokens: 0,
      });
    }
  }

  stats(): S {
    return this.scheduler().stats();
  }

  /** Cancels everything (each request ends "cancelled"), stops stepping, frees the KV cache. */
  close(): Promise<void> {
    this.closing ??= this.scheduler()
      .close()
      .finally(() => this.onClosed());
    return this.closing;
  }

  /** @internal one engine step's events, in order */
  dispatch(events: readonly RawSchedulerEvent<C>[]): void {
    for (const { id, ...event } of events) {
      const listener = this.listeners.get(id);
      if (!listener) continue;
      if (event.kind !== "tokens") this.listeners.delete(id);
      this.emit(listener.onEvent, event as BatchSchedulerEvent<C>);
    }
  }

  private emit(listener: (event: BatchSchedulerEvent<C>) => void, event: BatchSchedulerEvent<C>): void {
    try {
      listener(event);
    } catch (err) {
      // A listener's bug must not stop the other rows' events: surface it as an uncaught exception.
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  private scheduler(): RawScheduler<S> {
    if (!this.raw) throw this.codes.coded("closed", "the scheduler is not ready");
    return this.raw;
  }
}

/**
 * The schedulers a model made (the backend's model class holds one): each is attached to the addon's
 * scheduler as it is created, and close() closes every one (their requests end "cancelled") before
 * the model itself is freed.
 */
export class ModelSchedulers<C extends string, S extends SchedulerStats> {
  private readonly open = new Set<NativeScheduler<C, S>>();
  private closing: Promise<void> | undefined;

  constructor(private readonly codes: ErrorCodes<C | "bad_input" | "closed">) {}

  /**
   * Attaches a scheduler (made by the backend's model class) to what `create` makes in the addon;
   * rejects closed once the model closes.
   */
  async create<T extends NativeScheduler<C, S>>(
    make: (onClosed: () => void) => T,
    create: (onStep: (events: RawSchedulerEvent<C>[]) => void) => Promise<RawScheduler<S>>,
  ): Promise<T> {
    if (this.closing) throw this.codes.coded("closed", "the model is closed");
    const scheduler = make(() => this.open.delete(scheduler));
    scheduler.attach(await create((events) => scheduler.dispatch(events)));
    this.open.add(scheduler);
    return scheduler;
  }

  /** Closes every scheduler, then runs `free` (the model's own close); idempotent. */
  close(free: () => void): Promise<void> {
    this.closing ??= (async () => {
      await Promise.all([...this.open].map((s) => s.close()));
      free();
    })();
    return this.closing;
  }
}
