import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";

/** Micro-USD as dollars with all six decimals: 1500000n → "$1.500000". */
export function usd(microUsd: bigint): string {
  const sign = microUsd < 0n ? "-" : "";
  const magnitude = microUsd < 0n ? -microUsd : microUsd;
  return `${sign}$${magnitude / 1_000_000n}.${(magnitude % 1_000_000n).toString().padStart(6, "0")}`;
}

/** A timestamp in ISO 8601 UTC to the second, or "-" when unset. */
export function time(timestamp: Timestamp | undefined): string {
  return timestamp
    ? timestampDate(timestamp)
        .toISOString()
        .replace(/\.\d{3}Z$/, "Z")
    : "-";
}

/** Left-aligned columns separated by two spaces, with a header row; "(none)" when there are no rows. */
export function table(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  if (rows.length === 0) return "(none)\n";
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...rows.map((row) => (row[column] ?? "").length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
      .join("  ")
      .trimEnd();
  return `${[line(headers), ...rows.map(line)].join("\n")}\n`;
}

/** "label  value" lines with the labels aligned. */
export function fields(pairs: ReadonlyArray<readonly [string, string]>): string {
  const width = Math.max(...pairs.map(([label]) => label.length));
  return `${pairs.map(([label, value]) => `${label.padEnd(width)}  ${value}`).join("\n")}\n`;
}
