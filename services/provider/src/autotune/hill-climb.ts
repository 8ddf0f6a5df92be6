/**
 * Stage 2: a hill-climb over the chosen model's knobs. The objective is aggregate decode tokens per
 * second at the target batch; within `tieEpsilon` (relative) of each other, the lower TTFT wins.
 * Coordinate steps: for each axis in AXIS_ORDER, move the incumbent one cell at a time while the
 * neighbour is a new best, in one direction and then the other; repeat passes until one improves
 * nothing (converged) or the trial budget would be exceeded.
 *
 * Thermal and order bias: a machine that heats up (or a neighbour that gets busy) makes later trials
 * slower, which would favour whichever cell was measured first. So every comparison measures the
 * incumbent again right beside the challenger (never against stale figures), the two taking turns at
 * going first, and each cell's figure is the median of `replicates` trials, a cell counting as
 * feasible only when every replicate was.
 */
import { AXIS_ORDER, type AxisName, type Knobs, knobsKey, type SearchSpace } from "./knobs.js";
import type { TrialOutcome } from "./trial-store.js";

/** Measures one trial of a knob set (the real one runs the engine on the fixed workload). */
export interface Objective {
  measure(knobs: Knobs): Promise<TrialOutcome>;
}

/** A cell's figures over its replicates. */
export interface CellFigures {
  knobs: Knobs;
  feasible: boolean;
  /** Median over the replicates (0 when infeasible). */
  decodeTokensPerSecond: number;
  /** Median over the replicates; undefined when not measurable. */
  ttftMs: number | undefined;
  /** Why it is infeasible (the first failing replicate). */
  reason?: string | undefined;
  exitReason?: TrialOutcome["exitReason"] | undefined;
}

export interface ClimbOptions {
  /** Trials per cell evaluation (≥ 1). */
  replicates: number;
  /** Most trials the climb may run, the incumbent's re-measurements included (≥ replicates). */
  budget: number;
  /** Relative decode-rate difference under which two cells tie and TTFT decides (e.g. 0.02). */
  tieEpsilon: number;
  /** Each cell evaluation as it completes (progress, logs). */
  onCell?: (cell: CellFigures, role: "incumbent" | "challenger", trialsUsed: number) => void;
}

export interface ClimbResult {
  best: CellFigures;
  /** Trials run. */
  trials: number;
  /** True when a full pass over the axes improved nothing; false when the budget ran out first. */
  converged: boolean;
  /** Every evaluation, in order. */
  evaluations: { role: "incumbent" | "challenger"; cell: CellFigures }[];
}

/** A search that cannot start (an empty axis, a budget below one evaluation). */
export class ClimbError extends Error {
  override readonly name = "ClimbError";
}

/**
 * Whether `candidate` beats `best`: infeasible never wins; against an infeasible or zero-rate best
 * any positive rate wins; otherwise a rate more than `epsilon` (relative) higher wins, one more than
 * `epsilon` lower loses, and in between a measurable TTFT lower than the best's (or than none) wins.
 */
export function isNewBest(candidate: CellFigures, best: CellFigures, epsilon: number): boolean {
  if (!candidate.feasible) return false;
  if (!best.feasible || best.decodeTokensPerSecond <= 0) return candidate.decodeTokensPerSecond > 0;
  const relative =
    (candidate.decodeTokensPerSecond - best.decodeTokensPerSecond) / best.decodeTokensPerSecond;
  if (relative > epsilon) return true;
  if (relative < -epsilon) return false;
  return candidate.ttftMs !== undefined && (best.ttftMs === undefined || candidate.ttftMs < best.ttftMs);
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** The knobs one cell away from `knobs` along `axis`, or undefined at the axis's end. */
export function neighbour(
  space: SearchSpace,
  knobs: Knobs,
  axis: AxisName,
  direction: 1 | -1,
): Knobs | undefined {
  const cells = space[axis] as readonly unknown[];
  const at = cells.indexOf(knobs[axis]);
  const next = at + direction;
  if (at < 0 || next < 0 || next >= cells.length) return undefined;
  return { ...knobs, [axis]: cells[next] } as Knobs;
}

export async function climb(
  space: SearchSpace,
  start: Knobs,
  objective: Objective,
  options: ClimbOptions,
): Promise<ClimbResult> {
  const { replicates, budget, tieEpsilon } = options;
  if (!Number.isInteger(replicates) || replicates < 1) throw new ClimbError("replicates must be at least 1");
  if (!Number.isInteger(budget) || budget < replicates)
    throw new ClimbError(`the budget (${budget} trials) is below one cell of ${replicates} replicates`);
  for (const axis of AXIS_ORDER) {
    const cells = space[axis] as readonly unknown[];
    if (cells.length === 0) throw new ClimbError(`the ${axis} axis is empty`);
    if (!cells.includes(start[axis])) throw new ClimbError(`the start's ${axis} is not on its axis`);
  }
  let trials = 0;
  const evaluations: ClimbResult["evaluations"] = [];
  const evaluate = async (knobs: Knobs, role: "incumbent" | "challenger"): Promise<CellFigures> => {
    const rates: number[] = [];
    const ttfts: number[] = [];
    let failure: TrialOutcome | undefined;
    for (let r = 0; r < replicates; r++) {
      const outcome = await objective.measure(knobs);
      trials++;
      if (outcome.exitReason !== "ok" || !outcome.figures) {
        // Strictly all-feasible: one failed replicate makes the cell infeasible; the rest would
        // only cost time.
        failure = outcome;
        break;
      }
      rates.push(outcome.figures.decodeTokensPerSecond);
      if (Number.isFinite(outcome.figures.ttftMs)) ttfts.push(outcome.figures.ttftMs);
    }
    const cell: CellFigures = failure
      ? {
          knobs,
          feasible: false,
          decodeTokensPerSecond: 0,
          ttftMs: undefined,
          reason: failure.reason ?? failure.exitReason,
          exitReason: failure.exitReason,
        }
      : {
          knobs,
          feasible: true,
          decodeTokensPerSecond: median(rates),
          ttftMs: ttfts.length > 0 ? median(ttfts) : undefined,
        };
    evaluations.push({ role, cell });
    options.onCell?.(cell, role, trials);
    return cell;
  };

  let incumbent = await evaluate(start, "incumbent");
  /** Cells already compared (won or lost): not proposed again. */
  const visited = new Set<string>([knobsKey(start)]);
  let incumbentFirst = false;
  let converged = false;
  let outOfBudget = false;

  /** Compares a challenger with a fresh measurement of the incumbent; returns the winner's figures. */
  const compare = async (challenger: Knobs): Promise<{ won: boolean; challenger: CellFigures }> => {
    // An infeasible incumbent has nothing to re-measure: any feasible challenger beats it.
    if (!incumbent.feasible) {
      const c = await evaluate(challenger, "challenger");
      return { won: isNewBest(c, incumbent, tieEpsilon), challenger: c };
    }
    incumbentFirst = !incumbentFirst;
    let fresh: CellFigures;
    let c: CellFigures;
    if (incumbentFirst) {
      fresh = await evaluate(incumbent.knobs, "incumbent");
      c = await evaluate(challenger, "challenger");
    } else {
      c = await evaluate(challenger, "challenger");
      fresh = await evaluate(incumbent.knobs, "incumbent");
    }
    // The incumbent's own figures are the fresh ones from here on (feasible or not).
    incumbent = fresh;
    return { won: isNewBest(c, fresh, tieEpsilon), challenger: c };
  };
  const cost = () => (incumbent.feasible ? 2 * replicates : replicates);

  passes: while (!outOfBudget) {
    let improved = false;
    for (const axis of AXIS_ORDER) {
      for (const direction of [1, -1] as const) {
        let moved = false;
        for (;;) {
          const next = neighbour(space, incumbent.knobs, axis, direction);
          if (!next || visited.has(knobsKey(next))) break;
          if (trials + cost() > budget) {
            outOfBudget = true;
            break passes;
          }
          visited.add(knobsKey(next));
          const { won, challenger } = await compare(next);
          if (!won) break;
          incumbent = challenger;
          moved = improved = true;
        }
        // Having moved up the axis, the cells below were where it came from.
        if (moved) break;
      }
    }
    if (!improved) {
      converged = true;
      break;
    }
  }
  return { best: incumbent, trials, converged, evaluations };
}
