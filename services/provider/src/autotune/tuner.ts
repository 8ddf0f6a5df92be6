/**
 * One autotune run: stage 1 (biggest fit) then stage 2 (hill-climb) on the chosen model, every trial
 * recorded in the trial store and reused on a re-run, and the recipe of the result. The engine and
 * the checks are injected, so the same run is tested with the real engine on synthesized models.
 */
import { randomUUID } from "node:crypto";
import type { ModelFile } from "../engine/engine.js";
import type { Candidate } from "./candidates.js";
import { biggestFit, type CandidateChecks, type Stage1Result } from "./feasibility.js";
import { type ClimbResult, climb, type Objective } from "./hill-climb.js";
import { type Knobs, knobsKey, type SearchSpace } from "./knobs.js";
import { type RecipeDomain, type RecipeInputs, recipeDomain, recipeHash } from "./recipe.js";
import { workloadKey } from "./trial-runner.js";
import { type TrialOutcome, type TrialRecord, type TrialStore, trialKey } from "./trial-store.js";

/** The run was stopped by a signal between trials; what was recorded stays, a re-run resumes. */
export class TuneInterrupted extends Error {
  override readonly name = "TuneInterrupted";
}

export type TuneEvent =
  | { kind: "candidate"; model: string; index: number; total: number }
  | { kind: "verdict"; model: string; exitReason: string; reason?: string | undefined }
  | {
      kind: "trial";
      stage: 1 | 2;
      knobs: Knobs;
      outcome: TrialOutcome;
      reused: boolean;
      done: number;
      budget: number;
    };

export interface TuneOptions extends Omit<RecipeInputs, "candidates"> {
  candidates: readonly Candidate[];
  store: TrialStore;
  /** Stage 1's checks for the candidates (engineChecks in production). */
  checks(probe: (model: ModelFile) => Promise<TrialOutcome>): CandidateChecks;
  /** The objective measuring `model` (an EngineTrialRunner in production) and how to free it. */
  objective(model: ModelFile): Objective & { release(): Promise<void> };
  /**
   * The knobs a candidate starts from: `start` with what the model needs changed (fittedStart: the
   * context lowered to what fits the memory budget, as `serve` lowers it). Default: `start` as is.
   */
  startFor?: (model: ModelFile, start: Knobs) => Promise<Knobs>;
  /** True once a stop was asked for: the run ends before its next trial. */
  stopping?: () => boolean;
  onEvent?: (event: TuneEvent) => void;
  runId?: string;
}

export interface TuneResult {
  runId: string;
  stage1: Stage1Result;
  climb: ClimbResult | undefined;
  recipe: { domain: RecipeDomain; hash: string } | undefined;
  trialsRun: number;
  trialsReused: number;
}

export async function tune(options: TuneOptions): Promise<TuneResult> {
  const runId = options.runId ?? randomUUID();
  const { store, workload, gate, start } = options;
  const emit = options.onEvent ?? (() => {});
  const stopping = options.stopping ?? (() => false);
  // The memory budget decides which cells fit, so it is part of what a stored trial answered.
  const wkey = `${workloadKey(workload)}m${options.memoryBudgetBytes}`;
  const gkey = `${wkey}gate${gate.maxTtftMs}/${gate.minDecodeTokensPerSecond}`;
  let trialsRun = 0;
  let trialsReused = 0;

  const record = async (
    stage: 1 | 2,
    model: ModelFile,
    knobs: Knobs,
    knobsPart: string,
    workloadPart: string,
    occurrence: number,
    outcome: TrialOutcome,
    startedMs: number,
  ): Promise<void> => {
    const entry: TrialRecord = {
      v: 1,
      runId,
      key: trialKey({
        stage,
        modelSha256: model.sha256,
        knobs: knobsPart,
        workload: workloadPart,
        occurrence,
      }),
      stage,
      model: model.id,
      modelSha256: model.sha256,
      knobs,
      workload: workloadPart,
      occurrence,
      exitReason: outcome.exitReason,
      reason: outcome.reason,
      figures: outcome.figures,
      at: new Date().toISOString(),
      durationMs: Math.round(performance.now() - startedMs),
    };
    await store.append(entry);
  };

  const starts = new Map<string, Promise<Knobs>>();
  const startOf = (model: ModelFile): Promise<Knobs> => {
    let s = starts.get(model.id);
    if (!s) {
      s = options.startFor ? options.startFor(model, start) : Promise.resolve(start);
      starts.set(model.id, s);
    }
    return s;
  };

  const objectives = new Map<string, Objective & { release(): Promise<void> }>();
  const objectiveOf = (model: ModelFile) => {
    let o = objectives.get(model.id);
    if (!o) {
      o = options.objective(model);
      objectives.set(model.id, o);
    }
    return o;
  };

  try {
    // Stage 1. The probe of a candidate is the stored trial; its checks run again every time (a
    // file may have changed since), and their failures are recorded under keys of their own.
    const probe = async (model: ModelFile): Promise<TrialOutcome> => {
      const knobs = await startOf(model);
      const key = trialKey({
        stage: 1,
        modelSha256: model.sha256,
        knobs: `probe:${knobsKey(knobs)}`,
        workload: gkey,
        occurrence: 0,
      });
      probed.set(model.id, performance.now());
      const stored = store.lookup(key);
      if (stored) {
        trialsReused++;
        emit({ kind: "trial", stage: 1, knobs, outcome: stored, reused: true, done: 0, budget: 0 });
        return stored;
      }
      if (stopping()) throw new TuneInterrupted("stopped before probing");
      const outcome = await objectiveOf(model).measure(knobs);
      trialsRun++;
      emit({ kind: "trial", stage: 1, knobs, outcome, reused: false, done: 0, budget: 0 });
      return outcome;
    };
    /** Candidates that reached the probe (their verdict is the probe's), with when it began. */
    const probed = new Map<string, number>();
    const checks = options.checks(probe);
    let index = 0;
    const stage1 = await biggestFit(
      options.candidates,
      {
        fit: (m, knobs) => {
          emit({ kind: "candidate", model: m.id, index: index++, total: options.candidates.length });
          return checks.fit(m, knobs);
        },
        prewarm: (m) => checks.prewarm(m),
        probe: (m) => checks.probe(m),
      },
      gate,
      startOf,
      async (model, verdict) => {
        emit({ kind: "verdict", model: model.id, exitReason: verdict.exitReason, reason: verdict.reason });
        const began = probed.get(model.id);
        const knobs = await startOf(model);
        const knobsPart = `${began === undefined ? "check" : "probe"}:${knobsKey(knobs)}`;
        const key = trialKey({
          stage: 1,
          modelSha256: model.sha256,
          knobs: knobsPart,
          workload: gkey,
          occurrence: 0,
        });
        if (store.lookup(key)) return; // reused: already on file
        await record(1, model, knobs, knobsPart, gkey, 0, verdict, began ?? performance.now());
      },
    );
    for (const [id, o] of objectives) if (id !== stage1.chosen?.id) await o.release();
    if (!stage1.chosen)
      return { runId, stage1, climb: undefined, recipe: undefined, trialsRun, trialsReused };

    // Stage 2 on the chosen model, every trial through the store.
    const chosen = stage1.chosen;
    const inner = objectiveOf(chosen);
    const occurrences = new Map<string, number>();
    let done = 0;
    const recorded: Objective = {
      measure: async (knobs) => {
        const kk = knobsKey(knobs);
        const occurrence = occurrences.get(kk) ?? 0;
        occurrences.set(kk, occurrence + 1);
        const key = trialKey({ stage: 2, modelSha256: chosen.sha256, knobs: kk, workload: wkey, occurrence });
        const stored = store.lookup(key);
        done++;
        if (stored) {
          trialsReused++;
          emit({
            kind: "trial",
            stage: 2,
            knobs,
            outcome: stored,
            reused: true,
            done,
            budget: options.budget,
          });
          return stored;
        }
        if (stopping()) throw new TuneInterrupted("stopped between trials");
        const began = performance.now();
        const outcome = await inner.measure(knobs);
        trialsRun++;
        await record(2, chosen, knobs, kk, wkey, occurrence, outcome, began);
        emit({ kind: "trial", stage: 2, knobs, outcome, reused: false, done, budget: options.budget });
        return outcome;
      },
    };
    // The climb starts where the probe passed; contexts above the one that fits are not tried.
    const chosenStart = await startOf(chosen);
    const space: SearchSpace = {
      ...(options.space as SearchSpace),
      maxContext: [
        ...new Set([
          ...options.space.maxContext.filter((c) => c <= chosenStart.maxContext),
          chosenStart.maxContext,
        ]),
      ].sort((a, b) => a - b),
    };
    const result = await climb(space, chosenStart, recorded, {
      replicates: options.replicates,
      budget: options.budget,
      tieEpsilon: options.tieEpsilon,
    });
    let recipe: TuneResult["recipe"];
    if (result.best.feasible) {
      const domain = recipeDomain({ ...options, candidates: options.candidates }, chosen, result.best.knobs);
      recipe = { domain, hash: recipeHash(domain) };
    }
    return { runId, stage1, climb: result, recipe, trialsRun, trialsReused };
  } finally {
    for (const o of objectives.values()) await o.release();
  }
}
