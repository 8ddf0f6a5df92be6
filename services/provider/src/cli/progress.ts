// How the CLI shows sizes and download progress; the download itself is in download/.
import type { DownloadProgress } from "../download/download.js";

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** One progress-bar line (without the leading carriage return). */
export function progressLine(progress: DownloadProgress, elapsedMs: number, width = 30): string {
  const { received, total, resumedFrom } = progress;
  const rate = elapsedMs > 0 ? ((received - resumedFrom) * 1000) / elapsedMs : 0;
  const speed = `${formatBytes(Math.round(rate))}/s`;
  if (total === undefined || total === 0) return `${formatBytes(received)}  ${speed}`;
  const fraction = Math.min(1, received / total);
  const filled = Math.round(fraction * width);
  const bar = `${"#".repeat(filled)}${"-".repeat(width - filled)}`;
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  return `[${bar}] ${percent}  ${formatBytes(received)} / ${formatBytes(total)}  ${speed}`;
}

/** A progress bar on a terminal, redrawn at most every `intervalMs`; nothing when not a terminal. */
export function progressBar(
  write: (text: string) => void,
  isTty: boolean,
  intervalMs = 100,
): { update: (p: DownloadProgress) => void; done: () => void } {
  const started = performance.now();
  let last = 0;
  let latest: DownloadProgress | undefined;
  const draw = () => {
    if (latest) write(`\r${progressLine(latest, performance.now() - started)}\x1b[K`);
  };
  return {
    update: (p) => {
      latest = p;
      if (!isTty) return;
      const now = performance.now();
      if (now - last >= intervalMs) {
        last = now;
        draw();
      }
    },
    done: () => {
      if (!isTty || !latest) return;
      draw();
      write("\n");
    },
  };
}

/** "1m05s", "42s": a duration for an ETA. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

/** One step-progress line: `[####------] 3/10 label  ETA 12s` (the ETA from the mean step so far). */
export function stepLine(done: number, total: number, label: string, elapsedMs: number, width = 20): string {
  const fraction = total > 0 ? Math.min(1, done / total) : 0;
  const filled = Math.round(fraction * width);
  const eta = done > 0 && done < total ? `  ETA ${formatDuration((elapsedMs / done) * (total - done))}` : "";
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${done}/${total} ${label}${eta}`;
}

/** A step-progress bar with an ETA on a terminal; nothing when not a terminal. */
export function stepBar(
  write: (text: string) => void,
  isTty: boolean,
): { update: (done: number, total: number, label: string) => void; done: () => void } {
  const started = performance.now();
  let drawn = false;
  return {
    update: (done, total, label) => {
      if (!isTty) return;
      drawn = true;
      write(`\r${stepLine(done, total, label, performance.now() - started)}\x1b[K`);
    },
    done: () => {
      if (isTty && drawn) write("\r\x1b[K");
      drawn = false;
    },
  };
}
