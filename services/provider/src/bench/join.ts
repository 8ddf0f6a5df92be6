/**
 * TTFT under load: a new row joins rows that are already decoding, the steady state of a serving
 * daemon. What a consumer feels is the new row's time to first token; what the running rows feel is
 * the longest pause between their tokens while the newcomer's prompt is evaluated (an engine that
 * evaluates a whole prompt in one step stalls them for all of it; one that interleaves prompt chunks
 * with decode steps keeps them moving).
 */
import { median } from "./stats.js";
import type { BenchRow, BenchTarget } from "./target.js";

export interface JoinMeasurement {
  /** Rows decoding when the new row arrives. */
  running: number;
  /** The joining row's prompt tokens (the real count). */
  promptTokens: number;
  /** Submit to first text of the joining row. */
  ttftMs: number;
  /** The longest gap between two tokens of a running row while the joining row waited for its first. */
  stallMs: number;
  /** The running rows' median gap between tokens before the new row arrived (for scale). */
  gapBeforeMs: number;
}

export interface JoinOptions {
  /** Prompts of the running rows (one each) and of the joining row. */
  running: readonly string[];
  joining: string;
  /** Tokens each running row has produced before the new row is submitted. Default 8. */
  warmTokens?: number;
  /** Tokens of the joining row. Default 8. */
  joinTokens?: number;
  /**
   * Completion tokens of each running row: enough to still be decoding when the newcomer's first token
   * arrives (the measurement fails otherwise, rather than report a join that did not happen).
   */
  runningTokens: number;
}

/**
 * A running row ended before the joining row's first token, so nothing was measured: at its length
 * limit (`atLength`: run them longer) or at an end-of-generation token (other prompts may not).
 */
export class JoinTooShortError extends Error {
  override readonly name = "JoinTooShortError";
  constructor(
    message: string,
    readonly atLength: boolean,
  ) {
    super(message);
  }
}

/** Runs one join on `target` and measures it. */
export async function measureJoin(target: BenchTarget, options: JoinOptions): Promise<JoinMeasurement> {
  const warmTokens = options.warmTokens ?? 8;
  const times: number[][] = options.running.map(() => []);
  let release: () => void = () => {};
  const warm = new Promise<void>((resolve) => {
    release = resolve;
  });
  const rows: BenchRow[] = options.running.map((prompt, i) => ({
    prompt,
    genTokens: options.runningTokens,
    onToken: (at, tokens) => {
      const own = times[i] as number[];
      for (let t = 0; t < tokens; t++) own.push(at);
      if (times.every((list) => list.length >= warmTokens)) release();
    },
  }));
  rows.push({
    prompt: options.joining,
    genTokens: options.joinTokens ?? 8,
    startAfter: warm,
  });
  const timings = await target.runRows(rows);
  const joined = timings[timings.length - 1];
  if (joined?.firstTokenMs === undefined) throw new Error(`${target.name}: the joining row produced no text`);
  const firstAt = joined.firstTokenMs;
  const submittedAt = joined.startMs;
  const ended = timings.slice(0, -1).filter((_, i) => {
    const own = times[i] as number[];
    return (own[own.length - 1] ?? 0) <= firstAt;
  });
  if (ended.length > 0) {
    const atLength = ended.some((row) => row.finishReason === "length");
    throw new JoinTooShortError(
      `${target.name}: a running row ended (${atLength ? "at its length" : "at end of generation"}) before the joining row's first token`,
      atLength,
    );
  }
  let stallMs = 0;
  const gapsBefore: number[] = [];
  for (const list of times) {
    for (let k = 1; k < list.length; k++) {
      const [a, b] = [list[k - 1] as number, list[k] as number];
      if (b <= submittedAt) gapsBefore.push(b - a);
      // A gap overlapping the wait for the newcomer's first token.
      else if (a < firstAt) stallMs = Math.max(stallMs, b - a);
    }
  }
  return {
    running: options.running.length,
    promptTokens: joined.promptTokens,
    ttftMs: firstAt - submittedAt,
    stallMs,
    gapBeforeMs: median(gapsBefore),
  };
}

/** Field-by-field median of several joins. */
export function medianJoin(joins: readonly JoinMeasurement[]): JoinMeasurement {
  const first = joins[0];
  if (!first) throw new Error("no joins to take the median of");
  return {
    running: first.running,
    promptTokens: median(joins.map((j) => j.promptTokens)),
    ttftMs: median(joins.map((j) => j.ttftMs)),
    stallMs: median(joins.map((j) => j.stallMs)),
    gapBeforeMs: median(joins.map((j) => j.gapBeforeMs)),
  };
}
