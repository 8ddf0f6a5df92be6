// Durations as the load generator reads and writes them. Everything inside is microseconds.

/** Microseconds per unit; "µs" and "us" are the same unit. */
const MICROS_PER_UNIT: Record<string, number> = {
  µs: 1,
  us: 1,
  ms: 1_000,
  s: 1_000_000,
  m: 60_000_000,
  h: 3_600_000_000,
};

/** The units a duration may be written in, for messages. */
export const DURATION_UNITS = "µs, us, ms, s, m or h";

/**
 * Parses "250ms", "1.5s", "30s", "2m", "500us"; undefined when the text is not a number with one of
 * the units. `bareUnit` is the unit of a bare number (none: a unit is required).
 */
export function parseDurationMicros(text: string, bareUnit?: "s" | "ms" | "us"): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(µs|us|ms|s|m|h)?\s*$/.exec(text);
  if (!m) return undefined;
  const unit = m[2] ?? bareUnit;
  if (unit === undefined) return undefined;
  const factor = MICROS_PER_UNIT[unit];
  if (factor === undefined) return undefined;
  const value = Number(m[1]) * factor;
  return Number.isFinite(value) ? value : undefined;
}

/** A duration in microseconds with a human unit and three significant digits: 38.5µs, 12.3ms, 1.24s. */
export function formatMicros(us: number): string {
  if (!Number.isFinite(us)) return "-";
  const abs = Math.abs(us);
  if (abs < 1_000) return `${significant(us)}µs`;
  if (abs < 1_000_000) return `${significant(us / 1_000)}ms`;
  return `${significant(us / 1_000_000)}s`;
}

/** Three significant digits, no exponent, no trailing zeros (1234 stays 1234). */
export function significant(v: number): string {
  if (v === 0) return "0";
  const abs = Math.abs(v);
  const decimals = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
  return String(Number(v.toFixed(decimals)));
}
