/**
 * Whether two targets generated the same greedy tokens for the same prompts: the MLX core and mlx-lm
 * run the same checkpoint, so their greedy continuations agree up to where rounding tips a near-tie
 * (random weights make near-ties common). Pure: no I/O.
 */

export interface Agreement {
  /** Prompts both targets ran (the first run of each prompt counts). */
  rows: number;
  /** Rows whose tokens are identical. */
  identical: number;
  /** Per row that differs, the index of the first token that differs (or the shorter length). */
  divergences: number[];
}

export class GreedyAgreement {
  private readonly byTarget = new Map<string, Map<string, readonly number[]>>();

  /** A row's tokens for `prompt` on `target`; later runs of the same prompt are ignored. */
  record(target: string, prompt: string, tokens: readonly number[]): void {
    let rows = this.byTarget.get(target);
    if (!rows) {
      rows = new Map();
      this.byTarget.set(target, rows);
    }
    if (!rows.has(prompt)) rows.set(prompt, [...tokens]);
  }

  compare(a: string, b: string): Agreement {
    const left = this.byTarget.get(a) ?? new Map<string, readonly number[]>();
    const right = this.byTarget.get(b) ?? new Map<string, readonly number[]>();
    const result: Agreement = { rows: 0, identical: 0, divergences: [] };
    for (const [prompt, x] of left) {
      const y = right.get(prompt);
      if (!y) continue;
      result.rows++;
      const at = firstDifference(x, y);
      if (at === undefined) result.identical++;
      else result.divergences.push(at);
    }
    return result;
  }
}

/** The first index where the sequences differ (a length difference counts); undefined when equal. */
export function firstDifference(x: readonly number[], y: readonly number[]): number | undefined {
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return i;
  return x.length === y.length ? undefined : n;
}

/** One line, e.g. "core = mlx-lm on 10 of 12 rows (the others from tokens 17, 40)". */
export function formatAgreement(a: string, b: string, agreement: Agreement): string {
  if (agreement.rows === 0) return `${a} / ${b}: no prompt ran on both`;
  const others =
    agreement.divergences.length === 0
      ? ""
      : ` (the others differ from token ${[...agreement.divergences].sort((p, q) => p - q).join(", ")})`;
  return `greedy tokens, ${a} = ${b}: ${agreement.identical} of ${agreement.rows} rows${others}`;
}
