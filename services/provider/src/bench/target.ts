import type { Engine, Generation, GenerationRequest } from "../engine/engine.js";
import type { RowTiming } from "./stats.js";

/** Something the benchmark can run a batch of raw-text prompts on (greedy, `genTokens` each). */
export interface BenchTarget {
  /** Column name in the table, e.g. "engine". */
  readonly name: string;
  /** Submits every prompt at once (one row each) and resolves with each row's timings, in order. */
  runBatch(prompts: readonly string[], genTokens: number): Promise<RowTiming[]>;
  /** Releases what the target opened (not what it was given). */
  close(): Promise<void>;
}

/** Milliseconds on the monotonic clock every target uses. */
export const now = (): number => performance.now();

let requestSeq = 0;

/**
 * The engine through its `Engine` interface, as the daemon drives it: raw-text generations at
 * temperature 0, timed by the arrival of `onToken` events. The model must be loaded (or loadable).
 */
export function engineTarget(engine: Engine, modelId: string, name = "engine"): BenchTarget {
  return {
    name,
    runBatch: (prompts, genTokens) =>
      Promise.all(
        prompts.map(async (prompt) => {
          const request: GenerationRequest = {
            id: `bench-${++requestSeq}`,
            model: modelId,
            input: { kind: "text", prompt },
            sampling: { temperature: 0, topP: 1, topK: 0, stop: [], maxTokens: genTokens },
          };
          return timedGeneration(engine, request).timing;
        }),
      ),
    close: async () => {},
  };
}

/**
 * Starts one generation and times it by the arrival of its `onToken` events (the first, the last,
 * and each token's); `generation` is there to cancel it.
 */
export function timedGeneration(
  engine: Engine,
  request: GenerationRequest,
): { generation: Generation; timing: Promise<RowTiming> } {
  let firstTokenMs: number | undefined;
  let lastTokenMs: number | undefined;
  const tokenTimesMs: number[] = [];
  const startMs = now();
  const generation = engine.generate(request, (event) => {
    if (event.text === "" && event.tokens === 0) return;
    const at = now();
    firstTokenMs ??= at;
    lastTokenMs = at;
    for (let i = 0; i < event.tokens; i++) tokenTimesMs.push(at);
  });
  const timing = generation.done.then(
    (result): RowTiming => ({
      promptTokens: result.promptTokens,
      completionTokens: result.completionTokens,
      startMs,
      firstTokenMs,
      lastTokenMs,
      finishReason: result.finishReason,
      tokenTimesMs,
    }),
  );
  return { generation, timing };
}
