import type { Engine, Generation, GenerationRequest, SamplingOptions } from "../engine/engine.js";
import type { RowTiming } from "./stats.js";

/** One row of a benchmark run: a raw-text prompt generated greedily. */
export interface BenchRow {
  prompt: string;
  genTokens: number;
  /** Submitted only once this settles (a row joining rows already decoding); at once when absent. */
  startAfter?: Promise<unknown>;
  /** Called at the arrival of each piece of completion text, with its time and token count. */
  onToken?: (atMs: number, tokens: number) => void;
}

/** Something the benchmark can run rows of raw-text prompts on (greedy, `genTokens` each). */
export interface BenchTarget {
  /** Column name in the table, e.g. "engine". */
  readonly name: string;
  /**
   * Runs the rows together (one sequence each, submitted at once or when their `startAfter` settles)
   * and resolves with each row's timings, in order.
   */
  runRows(rows: readonly BenchRow[]): Promise<RowTiming[]>;
  /** Releases what the target opened (not what it was given). */
  close(): Promise<void>;
}

/** Submits every prompt at once (one row each) and resolves with each row's timings, in order. */
export function runBatch(
  target: BenchTarget,
  prompts: readonly string[],
  genTokens: number,
): Promise<RowTiming[]> {
  return target.runRows(prompts.map((prompt) => ({ prompt, genTokens })));
}

/** Milliseconds on the monotonic clock every target uses. */
export const now = (): number => performance.now();

let requestSeq = 0;

/**
 * The engine through its `Engine` interface, as the daemon drives it: raw-text generations at
 * temperature 0, timed by the arrival of `onToken` events. The model must be loaded (or loadable).
 * `sampling` adds to each request's sampling (a grammar, to time constrained decoding).
 */
export function engineTarget(
  engine: Engine,
  modelId: string,
  name = "engine",
  sampling: Partial<SamplingOptions> = {},
): BenchTarget {
  return {
    name,
    runRows: (rows) =>
      Promise.all(
        rows.map(async ({ prompt, genTokens, startAfter, onToken }) => {
          await startAfter;
          const request: GenerationRequest = {
            id: `bench-${++requestSeq}`,
            model: modelId,
            input: { kind: "text", prompt },
            sampling: { temperature: 0, topP: 1, topK: 0, stop: [], maxTokens: genTokens, ...sampling },
          };
          return timedGeneration(engine, request, onToken).timing;
        }),
      ),
    close: async () => {},
  };
}

/**
 * Appends the times of an event's `tokens` arriving `atMs`, the row's previous event having arrived
 * `previousMs` (undefined: this is its first): one token at its arrival, several spread evenly over
 * the time since the previous event. An event carries several tokens when the engine delivered them
 * together, or when their text was held back: a character split across byte tokens waits for its
 * last byte, and a model that emits a run of bytes that never complete one (tiny's random weights
 * do) holds the run until a character completes or the row ends. Timed all at their arrival, the
 * run's tokens would land after the window "all rows busy" measures, and a 54-token run moved a
 * tiny batch-4 round's rate by a third; spread, each is timed about when it was decoded.
 */
export function spreadTokenTimes(
  times: number[],
  previousMs: number | undefined,
  atMs: number,
  tokens: number,
): void {
  const from = previousMs ?? atMs;
  for (let i = 1; i <= tokens; i++) times.push(from + ((atMs - from) * i) / tokens);
}

/**
 * Starts one generation and times it by the arrival of its `onToken` events (the first, the last,
 * and each token's); `generation` is there to cancel it.
 */
export function timedGeneration(
  engine: Engine,
  request: GenerationRequest,
  onToken?: (atMs: number, tokens: number) => void,
): { generation: Generation; timing: Promise<RowTiming> } {
  let firstTokenMs: number | undefined;
  let lastTokenMs: number | undefined;
  const tokenTimesMs: number[] = [];
  const startMs = now();
  const generation = engine.generate(request, (event) => {
    if (event.text === "" && event.tokens === 0) return;
    const at = now();
    spreadTokenTimes(tokenTimesMs, lastTokenMs, at, event.tokens);
    firstTokenMs ??= at;
    lastTokenMs = at;
    onToken?.(at, event.tokens);
  });
  const timing = generation.done.then(
    (result): RowTiming => ({
      promptTokens: result.promptTokens,
      // The tokens sampled, as every other target counts them: the billed count is the tokenizer's
      // recount of the text, which on a random-weights model exceeds them.
      completionTokens: result.generatedTokens,
      startMs,
      firstTokenMs,
      lastTokenMs,
      finishReason: result.finishReason,
      tokenTimesMs,
    }),
  );
  return { generation, timing };
}
