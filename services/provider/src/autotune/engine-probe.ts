/**
 * The real feasibility checks of stage 1 (feasibility.ts): the memory estimate, the warm re-hash and
 * the child-process pre-warm load, and the in-process probe through the trial runner.
 */
import { sha256File } from "@darkbloom/models";
import type { ModelFile } from "../engine/engine.js";
import type { ModelValidator } from "../engine/llama/model-validator.js";
import type { Candidate } from "./candidates.js";
import type { CandidateChecks, CheckResult } from "./feasibility.js";
import type { Knobs } from "./knobs.js";
import { formatGiB, HeaderError, type MemoryEstimator } from "./memory-fit.js";
import type { TrialOutcome } from "./trial-store.js";

export interface EngineChecksOptions {
  estimator: MemoryEstimator;
  memoryBudgetBytes: number;
  /** The validator the engine is given too, so the child load is not repeated at the engine's load. */
  validator: ModelValidator;
  probe(model: ModelFile): Promise<TrialOutcome>;
}

/** The child check's wording of a load that ran past its deadline (a transient failure). */
const CHILD_TIMEOUT = /took longer than/;

export function engineChecks(options: EngineChecksOptions): CandidateChecks {
  return {
    async fit(model: Candidate, knobs: Knobs): Promise<CheckResult> {
      if (model.problem) return { ok: false, exitReason: "integrity", reason: model.problem };
      try {
        const need = await options.estimator.need(model, knobs);
        if (need.bytes > options.memoryBudgetBytes) {
          return {
            ok: false,
            exitReason: "oom",
            reason: `does not fit: needs ${formatGiB(need.bytes)} for ${knobs.maxBatch} rows of ${need.contextSize} tokens, the budget is ${formatGiB(options.memoryBudgetBytes)}`,
          };
        }
        return { ok: true };
      } catch (error) {
        if (error instanceof HeaderError)
          return { ok: false, exitReason: "integrity", reason: error.message };
        throw error;
      }
    },
    async prewarm(model: ModelFile): Promise<CheckResult> {
      // Reading every byte both checks the file against the hash it is known by and leaves it in the
      // page cache, so the probe's load (and its timings) do not wait on the disk.
      const sha256 = await sha256File(model.path);
      if (sha256 !== model.sha256) {
        return {
          ok: false,
          exitReason: "integrity",
          reason: `its sha256 is ${sha256}, not the ${model.sha256} it was listed with`,
        };
      }
      const verdict = await options.validator.validate(model.path, sha256);
      if (verdict.ok) return { ok: true };
      const reason = verdict.reason ?? "it failed to load in a child process";
      return { ok: false, exitReason: CHILD_TIMEOUT.test(reason) ? "timeout" : "integrity", reason };
    },
    probe: (model) => options.probe(model),
  };
}
