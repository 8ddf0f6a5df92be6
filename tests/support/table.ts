/** Prints rows as left-aligned columns under a header (the benchmarks' tables). */
export function printTable(header: readonly string[], lines: readonly (readonly string[])[]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? "").length)));
  for (const l of [header, ...lines])
    process.stdout.write(`${l.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ")}\n`);
}
