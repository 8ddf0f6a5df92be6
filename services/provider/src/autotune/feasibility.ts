/**
 * Stage 1: biggest fit. The candidates are walked in the order given (largest first by default; an
 * operator's own order is a contract and is never re-ranked) and the walk STOPS at the first one
 * that passes the feasibility gate, so a capable machine serves the biggest model it can, not the
 * fastest. Smaller candidates are never probed once one passes: they are named as alternates.
 *
 * For each candidate: does it fit the memory budget at the target context and batch (estimated, not
 * loaded); is the file intact and warm (its bytes hashed again, which also reads it into the page
 * cache, then a throwaway child process loads it, since a malformed GGUF can abort the process that
 * loads it); then the probe: loaded in-process (load time kept out of TTFT), a smoke generation
 * and the gate's thresholds on TTFT and decode rate. An integrity failure aborts the whole run; any
 * other failure moves on to the next candidate.
 */

import type { ModelFile } from "../engine/engine.js";
import type { Knobs } from "./knobs.js";
import type { ExitReason, TrialOutcome } from "./trial-store.js";

/** The thresholds a probe must meet. */
export interface Gate {
  /** Largest acceptable TTFT (median over the batch's rows), in ms. */
  maxTtftMs: number;
  /** Smallest acceptable aggregate decode rate, tokens/s. */
  minDecodeTokensPerSecond: number;
}

/** A pre-probe check: fine, or why not (`transient` moves on; otherwise the run aborts). */
export type CheckResult = { ok: true } | { ok: false; exitReason: ExitReason; reason: string };

/** The steps of a candidate's feasibility check; the real ones are in engine-probe.ts. */
export interface CandidateChecks {
  /** Memory fit at the probe's knobs, estimated without loading. */
  fit(model: ModelFile, knobs: Knobs): Promise<CheckResult>;
  /** Hash again (and warm) and load in a child process; `integrity` aborts, `timeout` moves on. */
  prewarm(model: ModelFile): Promise<CheckResult>;
  /** Loads in-process and measures the gate workload (a stored result may stand in for it). */
  probe(model: ModelFile): Promise<TrialOutcome>;
}

export interface CandidateVerdict {
  model: string;
  exitReason: ExitReason;
  reason?: string | undefined;
  figures?: TrialOutcome["figures"];
}

export interface Stage1Result {
  chosen: ModelFile | undefined;
  /** The chosen candidate's probe figures. */
  figures: TrialOutcome["figures"];
  /** Candidates after the chosen one, by name, never probed. */
  alternates: string[];
  /** Every candidate that was looked at, in order, with its outcome. */
  verdicts: CandidateVerdict[];
}

/** A candidate's file failed its integrity check: the whole run stops (exit 3). */
export class IntegrityAbort extends Error {
  override readonly name = "IntegrityAbort";
  constructor(
    readonly model: string,
    readonly reason: string,
  ) {
    super(`${model}: ${reason}`);
  }
}

/** Applies the gate to a probe's outcome. */
export function gateVerdict(outcome: TrialOutcome, gate: Gate): TrialOutcome {
  if (outcome.exitReason !== "ok" || !outcome.figures) return outcome;
  const f = outcome.figures;
  if (f.completionTokens <= 0 || !Number.isFinite(f.decodeTokensPerSecond))
    return { ...outcome, exitReason: "gate_failed", reason: "the smoke generation produced no tokens" };
  if (!(f.ttftMs <= gate.maxTtftMs))
    return {
      ...outcome,
      exitReason: "gate_failed",
      reason: `TTFT ${Math.round(f.ttftMs)} ms is above the gate's ${gate.maxTtftMs} ms`,
    };
  if (!(f.decodeTokensPerSecond >= gate.minDecodeTokensPerSecond))
    return {
      ...outcome,
      exitReason: "gate_failed",
      reason: `${f.decodeTokensPerSecond.toFixed(1)} tokens/s is below the gate's ${gate.minDecodeTokensPerSecond}`,
    };
  return outcome;
}

/**
 * Walks `candidates` in order and stops at the first that passes. `onVerdict` sees each outcome as it
 * is known (the integrity failure too, before the abort is thrown).
 */
export async function biggestFit(
  candidates: readonly ModelFile[],
  checks: CandidateChecks,
  gate: Gate,
  /** The knobs a candidate is checked and probed with (its context lowered to fit: fittedStart). */
  knobsOf: (model: ModelFile) => Promise<Knobs>,
  onVerdict: (model: ModelFile, verdict: CandidateVerdict) => void | Promise<void> = () => {},
): Promise<Stage1Result> {
  const verdicts: CandidateVerdict[] = [];
  const note = async (model: ModelFile, verdict: CandidateVerdict) => {
    verdicts.push(verdict);
    await onVerdict(model, verdict);
  };
  for (const [index, model] of candidates.entries()) {
    const fit = await checks.fit(model, await knobsOf(model));
    if (!fit.ok) {
      if (fit.exitReason === "integrity") {
        await note(model, { model: model.id, exitReason: fit.exitReason, reason: fit.reason });
        throw new IntegrityAbort(model.id, fit.reason);
      }
      await note(model, { model: model.id, exitReason: fit.exitReason, reason: fit.reason });
      continue;
    }
    const warm = await checks.prewarm(model);
    if (!warm.ok) {
      await note(model, { model: model.id, exitReason: warm.exitReason, reason: warm.reason });
      if (warm.exitReason === "integrity") throw new IntegrityAbort(model.id, warm.reason);
      continue;
    }
    const outcome = gateVerdict(await checks.probe(model), gate);
    await note(model, {
      model: model.id,
      exitReason: outcome.exitReason,
      reason: outcome.reason,
      figures: outcome.figures,
    });
    if (outcome.exitReason === "integrity")
      throw new IntegrityAbort(model.id, outcome.reason ?? "integrity failure");
    if (outcome.exitReason === "ok") {
      return {
        chosen: model,
        figures: outcome.figures,
        alternates: candidates.slice(index + 1).map((m) => m.id),
        verdicts,
      };
    }
  }
  return { chosen: undefined, figures: undefined, alternates: [], verdicts };
}
