/** The benchmark's table: targets side by side per batch size and metric, with ratios between targets. */
import type { TargetResult } from "./run.js";
import { type BatchMeasurement, formatRatio, ratio } from "./stats.js";

interface Metric {
  label: string;
  field: keyof BatchMeasurement;
  digits: number;
}

export const TABLE_METRICS: readonly Metric[] = [
  { label: "TTFT p50 ms", field: "ttftMs", digits: 0 },
  { label: "prefill tok/s", field: "prefillTokensPerSecond", digits: 1 },
  { label: "decode tok/s per row", field: "decodeTokensPerSecondPerRow", digits: 1 },
  { label: "decode tok/s aggregate", field: "decodeTokensPerSecondAggregate", digits: 1 },
  { label: "decode tok/s all rows busy", field: "decodeTokensPerSecondSteady", digits: 1 },
];

/** The same and what a batch delivered over its whole wall time (for engines that stream in bursts). */
export const WALL_METRICS: readonly Metric[] = [
  ...TABLE_METRICS,
  { label: "tok/s over wall time", field: "tokensPerSecondWall", digits: 1 },
];

/** What each metric of the table measures (printed under it). */
export const METRIC_NOTES =
  "TTFT: submit to the first text (median of the rows). prefill: all rows' prompt tokens / the last row's TTFT.\n" +
  "decode per row: tokens after the first / time after the first (median of the rows).\n" +
  "aggregate: all rows' tokens after their first / the first row's first token to the last row's last token\n" +
  "  (includes the prompts of rows that join later, which the engine interleaves with the decode steps).\n" +
  "all rows busy: tokens / time while every row decodes (the last row's first token to the first row's last).\n";

/** The note of WALL_METRICS' last line. */
export const WALL_METRIC_NOTE =
  "over wall time: all rows' completion tokens / submit to the last token (prompts included).\n";

/** A ratio column: numerator target / denominator target. */
export type RatioColumn = readonly [numerator: string, denominator: string];

function formatNumber(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "-";
}

/** Left-aligns the first column, right-aligns the rest, two spaces apart. */
export function alignColumns(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) {
    for (const [i, cell] of row.entries()) widths[i] = Math.max(widths[i] ?? 0, cell.length);
  }
  return rows
    .map((row) =>
      row
        .map((cell, i) => (i <= 1 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** Which summary over the rounds a table shows. */
export type RoundSummary = "median" | "best";

/** One line per batch size and metric: each target's median (or best) over the rounds, then the ratios. */
export function formatComparison(
  results: readonly TargetResult[],
  ratios: readonly RatioColumn[] = [],
  summary: RoundSummary = "median",
  metrics: readonly Metric[] = TABLE_METRICS,
): string {
  const byTarget = new Map(
    results.map((r) => [r.target, new Map(r.batches.map((b) => [b.batch, b[summary]]))]),
  );
  const batches = [...new Set(results.flatMap((r) => r.batches.map((b) => b.batch)))];
  const header = ["batch", "metric", ...results.map((r) => r.target), ...ratios.map(([a, b]) => `${a}/${b}`)];
  const lines: string[][] = [header];
  for (const batch of batches) {
    for (const metric of metrics) {
      const value = (target: string) => byTarget.get(target)?.get(batch)?.[metric.field] ?? Number.NaN;
      lines.push([
        String(batch),
        metric.label,
        ...results.map((r) => formatNumber(value(r.target), metric.digits)),
        ...ratios.map(([a, b]) => formatRatio(ratio(value(a), value(b)))),
      ]);
    }
  }
  return `${alignColumns(lines)}\n`;
}

/** Real prompt lengths and early stops, which the table's rates depend on. */
export function formatWorkload(results: readonly TargetResult[], genTokens: number): string {
  const out: string[] = [];
  for (const r of results) {
    const parts = r.batches.map((b) => {
      const short = b.rounds.reduce((sum, m) => sum + m.shortRows, 0);
      const rows = b.rounds.length * b.batch;
      return (
        `batch ${b.batch}: prompt ${formatNumber(b.median.promptTokens, 1)} tok/row, ` +
        `${formatNumber(b.median.completionTokens, 0)} completion tok` +
        (short > 0 ? ` (${short}/${rows} rows ended before ${genTokens})` : "")
      );
    });
    out.push(`${r.target}: ${parts.join("; ")}`);
  }
  return `${out.join("\n")}\n`;
}
