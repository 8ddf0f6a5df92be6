/** Command-line values of the benchmarks (`darkbloom benchmark`, `npm run bench:provider`). */

/** A flag value the benchmark cannot use; the commands turn it into one line and exit 64. */
export class BenchFlagError extends Error {
  override readonly name = "BenchFlagError";
}

/** The most rows a benchmark batch may have. */
export const MAX_BENCH_BATCH = 256;

/** A whole number from `min` to `max` given as `flag`; `fallback` when absent. */
export function integerFlag(
  flag: string,
  raw: unknown,
  fallback: number,
  min: number,
  max: number = Number.MAX_SAFE_INTEGER,
): number {
  if (raw === undefined) return fallback;
  const text = String(raw).trim();
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`;
    throw new BenchFlagError(`${flag} must be a whole number ${range} (got ${JSON.stringify(String(raw))})`);
  }
  return n;
}

/** "1,2,4": distinct batch sizes from 1 to MAX_BENCH_BATCH, in the order given. */
export function batchesFlag(flag: string, raw: unknown, fallback: readonly number[]): number[] {
  if (raw === undefined) return [...fallback];
  const items = String(raw)
    .split(",")
    .map((s) => s.trim());
  const out: number[] = [];
  for (const item of items) {
    const n = Number(item);
    if (!/^\d+$/.test(item) || n < 1 || n > MAX_BENCH_BATCH) {
      throw new BenchFlagError(
        `${flag} must be batch sizes from 1 to ${MAX_BENCH_BATCH} separated by commas (got ${JSON.stringify(String(raw))})`,
      );
    }
    if (out.includes(n)) throw new BenchFlagError(`${flag} lists batch size ${n} twice`);
    out.push(n);
  }
  return out;
}
