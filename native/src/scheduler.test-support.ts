// What the batching cores' tests (llama.test.ts, mlx.test.ts) share: running a request to its end on
// either backend's scheduler, and reading the code a call threw. Not exported from the package.
import { expect } from "vitest";
import type {
  BatchSchedulerEvent,
  FinishReason,
  GenerateRequest,
  NativeScheduler,
  SchedulerStats,
  TokenLogprobs,
} from "./batch-scheduler.js";

/** Everything one request produced, and how it ended. */
export interface Outcome {
  tokens: number[];
  reason: FinishReason | undefined;
  error: string | undefined;
  promptTokens: number;
  generatedTokens: number;
}

let nextId = 0;

/** A tokens event, as a request's listener gets it. */
export type TokensEvent = Extract<BatchSchedulerEvent<string>, { kind: "tokens" }>;

/** Submits one request; resolves with everything it produced. `onTokens` sees each tokens event. */
export function generate<C extends string, S extends SchedulerStats>(
  s: NativeScheduler<C, S>,
  request: Omit<GenerateRequest, "id"> & { id?: string },
  onTokens?: (event: TokensEvent) => void,
): Promise<Outcome> {
  return new Promise((resolve) => {
    const out: Outcome = {
      tokens: [],
      reason: undefined,
      error: undefined,
      promptTokens: 0,
      generatedTokens: 0,
    };
    s.submit({ id: request.id ?? `r${nextId++}`, ...request }, (event: BatchSchedulerEvent<C>) => {
      if (event.kind === "tokens") {
        out.tokens.push(...event.tokens);
        onTokens?.(event);
      } else if (event.kind === "done") {
        Object.assign(out, { reason: event.reason, promptTokens: event.promptTokens });
        out.generatedTokens = event.generatedTokens;
        resolve(out);
      } else {
        out.error = event.code;
        resolve(out);
      }
    });
  });
}

/**
 * Submits the requests together: `decoding` resolves once every one of them has produced a token (all
 * are in decode steps), `outcomes` once all have ended.
 */
export function generateTogether<C extends string, S extends SchedulerStats>(
  s: NativeScheduler<C, S>,
  requests: ReadonlyArray<Omit<GenerateRequest, "id"> & { id?: string }>,
): { decoding: Promise<void>; outcomes: Promise<Outcome[]> } {
  let waiting = requests.length;
  let allDecoding!: () => void;
  const decoding = new Promise<void>((resolve) => {
    allDecoding = resolve;
  });
  const outcomes = Promise.all(
    requests.map((request) => {
      let first = true;
      return generate(s, request, () => {
        if (first && --waiting === 0) allDecoding();
        first = false;
      });
    }),
  );
  return { decoding, outcomes };
}

/** A request's tokens and each one's logprobs (every tokens event must carry one entry per token). */
export async function generateWithLogprobs<C extends string, S extends SchedulerStats>(
  s: NativeScheduler<C, S>,
  request: Omit<GenerateRequest, "id"> & { id?: string },
): Promise<Outcome & { logprobs: TokenLogprobs[] }> {
  const logprobs: TokenLogprobs[] = [];
  const out = await generate(s, request, (event) => {
    expect(event.logprobs?.length).toBe(event.tokens.length);
    logprobs.push(...(event.logprobs ?? []));
  });
  return { ...out, logprobs };
}

/** The code `fn` threw, read with the backend's `codeOf` (else the error as text), or undefined. */
export function thrownCodeWith(
  codeOf: (error: unknown) => string | undefined,
  fn: () => unknown,
): string | undefined {
  try {
    fn();
  } catch (err) {
    return codeOf(err) ?? String(err);
  }
  return undefined;
}
