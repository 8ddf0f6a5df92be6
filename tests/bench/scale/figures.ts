// Small numeric helpers shared by the drills and their report.
import { readFileSync } from "node:fs";
import { percentile } from "../../support/load-client.js";

/** p50 / p99 / max of a sample (NaN when empty). */
export interface Spread {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

export function spread(values: number[], digits = 2): Spread {
  return {
    count: values.length,
    p50: round(percentile(values, 50), digits),
    p99: round(percentile(values, 99), digits),
    max:
      values.length === 0
        ? Number.NaN
        : round(
            values.reduce((m, v) => Math.max(m, v)),
            digits,
          ),
  };
}

export function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** CPU time over wall time, as a percentage of one core. */
export function cpuPercent(cpuMicros: number, wallMs: number): number {
  return round((cpuMicros / 1000 / wallMs) * 100, 1);
}

export function mib(bytes: number): number {
  return round(bytes / 1024 / 1024, 1);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One pass/fail condition of a drill. */
export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export function check(name: string, ok: boolean, detail: string): Check {
  return { name, ok, detail };
}

/**
 * Linux PSI: total µs some task waited for a CPU (/proc/pressure/cpu), or NaN where unavailable.
 * Over a window, Δ / wall time is how contended the machine's CPUs were (the drill's own processes
 * included).
 */
export function cpuPressureMicros(): number {
  try {
    const some = /^some .*total=(\d+)/m.exec(readFileSync("/proc/pressure/cpu", "utf8"));
    return some ? Number(some[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}
