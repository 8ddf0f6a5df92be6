/**
 * Every autotune trial, one JSON line each in `<data dir>/autotune/trials.jsonl`, appended and
 * fsynced before the next trial starts, so a crash loses at most the trial in flight. A re-run reads
 * the file back and skips every trial whose key is already recorded with a terminal exit reason.
 * No database: a JSON-lines file needs no native module, and a torn last line (the crash) is skipped.
 */
import { mkdir, open, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Knobs } from "./knobs.js";

/** How a trial ended: a fixed set, stored as is. */
export const EXIT_REASONS = [
  /** Measured. */
  "ok",
  /** Does not fit the memory budget (predicted before loading, or the allocation failed). */
  "oom",
  /** Ran past its deadline (the child pre-warm, or a batch that did not finish). */
  "timeout",
  /** The file is corrupt or not what was hashed: the whole run aborts. */
  "integrity",
  /** Measured, but slower than the feasibility gate allows (or produced no tokens). */
  "gate_failed",
  /** The engine could not load the model for another reason. */
  "load_failed",
  /** A generation failed. */
  "engine_error",
  /** The knob set is one the engine refuses. */
  "config_error",
  /** Stopped by a signal; not terminal, so a re-run measures it again. */
  "interrupted",
] as const;
export type ExitReason = (typeof EXIT_REASONS)[number];

/** Exit reasons a re-run does not measure again. */
export function isTerminal(reason: ExitReason): boolean {
  return reason !== "interrupted";
}

/** What a measured trial found. */
export interface TrialFigures {
  /** Decode tokens per second summed over the batch's rows (the objective). */
  decodeTokensPerSecond: number;
  /** Time to first token, median over the rows (the tie-break); the model was loaded before. */
  ttftMs: number;
  completionTokens: number;
  /** Batches run in the trial's time. */
  batches: number;
  /** Loading the model for this knob set, when this trial loaded it (not part of TTFT). */
  loadMs?: number | undefined;
}

/** One measurement's outcome, as objectives report it. */
export interface TrialOutcome {
  exitReason: ExitReason;
  /** Why, for everything but ok. */
  reason?: string | undefined;
  figures?: TrialFigures | undefined;
}

/** A stored trial. `knobs.kvBits` is null in the file for the unquantized cache. */
export interface TrialRecord extends TrialOutcome {
  v: 1;
  runId: string;
  key: string;
  stage: 1 | 2;
  model: string;
  modelSha256: string;
  knobs: Knobs;
  /** The workload (and for stage 1 the gate) the trial ran, as a key. */
  workload: string;
  /** The n-th time this run asked for this knob set (stage 2 re-measures the incumbent). */
  occurrence: number;
  at: string;
  durationMs: number;
}

export const TRIALS_FILE = join("autotune", "trials.jsonl");

/** The key a trial is found by on resume. */
export function trialKey(parts: {
  stage: 1 | 2;
  modelSha256: string;
  knobs: string;
  workload: string;
  occurrence: number;
}): string {
  return `s${parts.stage}|${parts.modelSha256}|${parts.knobs}|${parts.workload}|#${parts.occurrence}`;
}

export class TrialStore {
  private readonly recorded = new Map<string, TrialRecord>();
  /** Trials appended by this process, in order. */
  readonly appended: TrialRecord[] = [];

  private constructor(
    readonly path: string,
    private readonly handle: import("node:fs/promises").FileHandle,
    previous: TrialRecord[],
    /** Lines that could not be read (a torn last line after a crash). */
    readonly skippedLines: number,
  ) {
    for (const record of previous) if (isTerminal(record.exitReason)) this.recorded.set(record.key, record);
  }

  /** Opens (creating) the store of a data directory; `fresh` ignores what earlier runs recorded. */
  static async open(dataDir: string, options: { fresh?: boolean } = {}): Promise<TrialStore> {
    const path = join(dataDir, TRIALS_FILE);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const previous: TrialRecord[] = [];
    let skipped = 0;
    if (!options.fresh) {
      const text = await readFile(path, "utf8").catch((error: NodeJS.ErrnoException) => {
        if (error.code === "ENOENT") return "";
        throw error;
      });
      for (const line of text.split("\n")) {
        if (line.trim() === "") continue;
        const record = parseRecord(line);
        if (record) previous.push(record);
        else skipped++;
      }
    }
    const handle = await open(path, "a", 0o600);
    return new TrialStore(path, handle, previous, skipped);
  }

  /** The terminal record of `key`, from this run or an earlier one. */
  lookup(key: string): TrialRecord | undefined {
    return this.recorded.get(key);
  }

  /** Appends a trial and fsyncs before returning: once this resolves the trial survives a crash. */
  async append(record: TrialRecord): Promise<void> {
    const line = `${JSON.stringify({ ...record, knobs: { ...record.knobs, kvBits: record.knobs.kvBits ?? null } })}\n`;
    await this.handle.write(line);
    await this.handle.sync();
    this.appended.push(record);
    if (isTerminal(record.exitReason)) this.recorded.set(record.key, record);
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

function parseRecord(line: string): TrialRecord | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof raw !== "object" || raw === null) return undefined;
  const r = raw as Record<string, unknown>;
  const knobs = r.knobs as Record<string, unknown> | undefined;
  if (
    r.v !== 1 ||
    typeof r.key !== "string" ||
    typeof r.exitReason !== "string" ||
    !(EXIT_REASONS as readonly string[]).includes(r.exitReason) ||
    (r.stage !== 1 && r.stage !== 2) ||
    typeof knobs !== "object" ||
    knobs === null
  ) {
    return undefined;
  }
  return {
    ...(r as unknown as TrialRecord),
    knobs: { ...(knobs as unknown as Knobs), kvBits: (knobs.kvBits ?? undefined) as Knobs["kvBits"] },
  };
}
