/**
 * The arithmetic of the provider benchmark: per-row timings of one batch turned into TTFT, prefill and
 * decode rates, medians over rounds, and the target checks. Pure: no clocks, no I/O.
 */

/** When one row of a batch was submitted and when its text arrived (milliseconds, one monotonic clock). */
export interface RowTiming {
  /** Prompt tokens the server counted for this row. */
  promptTokens: number;
  completionTokens: number;
  /** Submitted. */
  startMs: number;
  /** First piece of completion text arrived; undefined when none did. */
  firstTokenMs: number | undefined;
  /** Last piece of completion text arrived. */
  lastTokenMs: number | undefined;
  finishReason: string;
  /**
   * Time of each completion token, when the target sees them one by one (one entry per token: an
   * engine's event of several tokens spreads them since the previous event, spreadTokenTimes; over
   * HTTP one per SSE event, scaled to the token count when events carry several).
   */
  tokenTimesMs?: number[];
}

/** The figures of one batch (all rows submitted together). */
export interface BatchMeasurement {
  batch: number;
  /** Mean prompt tokens per row (the real count, not the requested one). */
  promptTokens: number;
  /** Completion tokens over all rows. */
  completionTokens: number;
  /** Rows that ended before the requested completion length (end of generation). */
  shortRows: number;
  /** Time to first token, median over the rows. */
  ttftMs: number;
  /** All rows' prompt tokens / the last row's time to first token (at batch 1: prompt / TTFT). */
  prefillTokensPerSecond: number;
  /** Per row: tokens after the first / time after the first token; median over the rows. */
  decodeTokensPerSecondPerRow: number;
  /** All rows' tokens after their first / wall time from the first row's first token to the last row's last token. */
  decodeTokensPerSecondAggregate: number;
  /**
   * All rows' tokens / time, counted only while every row is decoding (from the last row's first token
   * to the first row's last token): the batched decode rate without the prompts of rows still joining.
   */
  decodeTokensPerSecondSteady: number;
  /** Submit to the last token of the last row. */
  wallMs: number;
  /**
   * All rows' completion tokens / wallMs: what the batch delivered, prompts included. It cannot be
   * flattered by tokens that reach the consumer in bursts (the rates between token arrivals can,
   * when an engine steps faster than its consumer reads, as on tiny models).
   */
  tokensPerSecondWall: number;
}

/** The numeric fields of a BatchMeasurement that medians are taken of. */
export const MEASURED_FIELDS = [
  "promptTokens",
  "completionTokens",
  "shortRows",
  "ttftMs",
  "prefillTokensPerSecond",
  "decodeTokensPerSecondPerRow",
  "decodeTokensPerSecondAggregate",
  "decodeTokensPerSecondSteady",
  "wallMs",
  "tokensPerSecondWall",
] as const satisfies readonly (keyof BatchMeasurement)[];

/**
 * The p-th percentile (0..100) with linear interpolation between closest ranks (so the median of an
 * even count is the mean of the middle two); NaN for no values. Non-finite values are ignored.
 */
export function percentile(values: readonly number[], p: number): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const clamped = Math.min(100, Math.max(0, p));
  const rank = (clamped / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = sorted[lo] as number;
  const b = sorted[hi] as number;
  return a + (b - a) * (rank - lo);
}

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

/** Tokens per second for `tokens` over `ms`; NaN when either is not positive. */
export function rate(tokens: number, ms: number): number {
  return tokens > 0 && ms > 0 ? (tokens * 1000) / ms : Number.NaN;
}

/** Decode tokens of a row: those after the first (the first token ends the prefill). */
function decodeTokens(row: RowTiming): number {
  return Math.max(0, row.completionTokens - 1);
}

/**
 * Tokens per second over (start, end] of the rows' token times; a row whose times are fewer than its
 * tokens (SSE events carrying several) counts each time for its share. NaN without such times.
 */
export function steadyRate(rows: readonly RowTiming[], startMs: number, endMs: number): number {
  if (!(endMs > startMs) || rows.some((r) => !r.tokenTimesMs || r.tokenTimesMs.length < 2)) return Number.NaN;
  let tokens = 0;
  for (const r of rows) {
    const times = r.tokenTimesMs ?? [];
    const weight = Math.max(1, (r.completionTokens - 1) / (times.length - 1));
    for (const t of times) if (t > startMs && t <= endMs) tokens += weight;
  }
  return rate(tokens, endMs - startMs);
}

/** Summarizes one batch; `genTokens` is the completion length asked for (to count rows that ended early). */
export function summarizeBatch(rows: readonly RowTiming[], genTokens: number): BatchMeasurement {
  if (rows.length === 0) throw new Error("a batch has at least one row");
  const started = Math.min(...rows.map((r) => r.startMs));
  const ttfts = rows.map((r) => (r.firstTokenMs === undefined ? Number.NaN : r.firstTokenMs - r.startMs));
  const perRow = rows.map((r) =>
    r.firstTokenMs === undefined || r.lastTokenMs === undefined
      ? Number.NaN
      : rate(decodeTokens(r), r.lastTokenMs - r.firstTokenMs),
  );
  const firsts = rows.flatMap((r) => (r.firstTokenMs === undefined ? [] : [r.firstTokenMs]));
  const lasts = rows.flatMap((r) => (r.lastTokenMs === undefined ? [] : [r.lastTokenMs]));
  const promptTotal = rows.reduce((sum, r) => sum + r.promptTokens, 0);
  const decodeTotal = rows.reduce((sum, r) => sum + decodeTokens(r), 0);
  const lastFirst = firsts.length === rows.length ? Math.max(...firsts) : Number.NaN;
  const wallMs = lasts.length === 0 ? Number.NaN : Math.max(...lasts) - started;
  const completionTokens = rows.reduce((sum, r) => sum + r.completionTokens, 0);
  return {
    batch: rows.length,
    promptTokens: promptTotal / rows.length,
    completionTokens,
    shortRows: rows.filter((r) => r.completionTokens < genTokens).length,
    ttftMs: median(ttfts),
    prefillTokensPerSecond: rate(promptTotal, lastFirst - started),
    decodeTokensPerSecondPerRow: median(perRow),
    decodeTokensPerSecondAggregate:
      firsts.length === 0 ? Number.NaN : rate(decodeTotal, Math.max(...lasts) - Math.min(...firsts)),
    decodeTokensPerSecondSteady:
      firsts.length === rows.length && lasts.length === rows.length
        ? steadyRate(rows, lastFirst, Math.min(...lasts))
        : Number.NaN,
    wallMs,
    tokensPerSecondWall: rate(completionTokens, wallMs),
  };
}

/** Field-by-field median over rounds of the same batch size. */
export function medianMeasurement(rounds: readonly BatchMeasurement[]): BatchMeasurement {
  const first = rounds[0];
  if (!first) throw new Error("no rounds to take the median of");
  const out: BatchMeasurement = { ...first };
  for (const field of MEASURED_FIELDS) out[field] = median(rounds.map((r) => r[field]));
  return out;
}

/** Fields where lower is better (the best round is the fastest). */
const LOWER_IS_BETTER: ReadonlySet<keyof BatchMeasurement> = new Set(["ttftMs", "wallMs"]);
/** Fields that describe the workload rather than its speed (the median is kept). */
const WORKLOAD_FIELDS: ReadonlySet<keyof BatchMeasurement> = new Set([
  "promptTokens",
  "completionTokens",
  "shortRows",
]);

/**
 * Field-by-field best over rounds: the highest rates, the lowest times. On a shared machine the least
 * disturbed round is the closest to what the code can do; workload fields keep their median.
 */
export function bestMeasurement(rounds: readonly BatchMeasurement[]): BatchMeasurement {
  const out = medianMeasurement(rounds);
  for (const field of MEASURED_FIELDS) {
    if (WORKLOAD_FIELDS.has(field)) continue;
    const values = rounds.map((r) => r[field]).filter((v) => Number.isFinite(v));
    if (values.length === 0) continue;
    out[field] = LOWER_IS_BETTER.has(field) ? Math.min(...values) : Math.max(...values);
  }
  return out;
}

/** a / b, NaN when it is not a finite number. */
export function ratio(a: number, b: number): number {
  const r = a / b;
  return Number.isFinite(r) ? r : Number.NaN;
}

export interface TargetCheck {
  name: string;
  pass: boolean;
  /** The ratios the verdict is based on, e.g. "batch 4 / batch 1 = 2.31". */
  detail: string;
}

/** Aggregate decode rate by batch size, for the checks. */
export type AggregateByBatch = ReadonlyMap<number, number>;

/** "batch-N aggregate ≥ factor × batch 1": the scaling of continuous batching. */
export function scalingCheck(
  name: string,
  aggregate: AggregateByBatch,
  batch: number,
  factor: number,
): TargetCheck {
  const r = ratio(aggregate.get(batch) ?? Number.NaN, aggregate.get(1) ?? Number.NaN);
  return { name, pass: r >= factor, detail: `batch ${batch} / batch 1 = ${formatRatio(r)}` };
}

/** "candidate ≥ share × reference at every batch size" (aggregate decode). */
export function overheadCheck(
  name: string,
  candidate: AggregateByBatch,
  reference: AggregateByBatch,
  share: number,
): TargetCheck {
  const parts: string[] = [];
  let pass = reference.size > 0;
  for (const [batch, ref] of reference) {
    const r = ratio(candidate.get(batch) ?? Number.NaN, ref);
    parts.push(`batch ${batch}: ${formatRatio(r)}`);
    if (!(r >= share)) pass = false;
  }
  return { name, pass, detail: parts.join(", ") };
}

export function formatRatio(r: number): string {
  return Number.isFinite(r) ? r.toFixed(2) : "-";
}
