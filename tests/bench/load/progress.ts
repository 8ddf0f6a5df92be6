// The progress line on stderr while a run goes on: one line rewritten in place on a terminal,
// nothing at all when stderr is a file or a pipe.
import type { Progress } from "./runner.js";
import { formatMicros, significant } from "./units.js";

export interface ProgressLine {
  update(progress: Progress): void;
  /** Erases the line (before any other output, and at the end). */
  clear(): void;
}

/** Formats one progress report: "measure 120/200, 0 errors, 4 in flight, 16.2 req/s, 7.41s". */
export function formatProgress(p: Progress): string {
  const rate = p.elapsedMs > 0 ? (p.done * 1000) / p.elapsedMs : 0;
  const of = p.total === undefined ? "" : `/${p.total}`;
  return `${p.phase} ${p.done}${of}, ${p.errors} errors, ${p.inFlight} in flight, ${significant(rate)} req/s, ${formatMicros(p.elapsedMs * 1000)}`;
}

export function progressLine(stream: NodeJS.WriteStream): ProgressLine {
  if (!stream.isTTY) return { update: () => undefined, clear: () => undefined };
  let shown = false;
  return {
    update(progress) {
      const text = `bench:load: ${formatProgress(progress)}`;
      const width = stream.columns > 1 ? stream.columns - 1 : 200;
      stream.write(`\r\x1b[K${text.slice(0, width)}`);
      shown = true;
    },
    clear() {
      if (shown) stream.write("\r\x1b[K");
      shown = false;
    },
  };
}
