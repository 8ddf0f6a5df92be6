/** `autotune --dry-run`: the plan, in the order it would run, without loading or measuring anything. */
import { formatBytes } from "../cli/progress.js";
import type { Candidate } from "./candidates.js";
import { describeKnobs } from "./knobs.js";
import type { SearchSettings } from "./recipe.js";

export interface PlanInputs extends SearchSettings {
  /** Threads left to the engine: each candidate is probed with its own count (engine/threads.ts). */
  autoThreads?: boolean;
  candidates: readonly Candidate[];
  operatorOrder: boolean;
  storePath: string;
  recordedTrials: number;
  apply: string | undefined;
}

export function formatPlan(p: PlanInputs): string {
  const w = p.workload;
  const lines = [
    `stage 1: biggest fit, candidates ${p.operatorOrder ? "in the order given" : "largest first"}; stops at the first that passes`,
    ...p.candidates.map(
      (c, i) =>
        `  ${i + 1}. ${c.id} (${c.problem ? "unreadable" : `${c.architecture}, ${c.quantization}`}, ${formatBytes(c.sizeBytes)})`,
    ),
    `  each: memory fit (budget ${formatBytes(p.memoryBudgetBytes)}), re-hash and warm, load in a child process, probe`,
    `  probe: ${describeKnobs(p.start)}${p.autoThreads ? " (threads: auto, per model)" : ""}, context lowered to fit; gate TTFT <= ${p.gate.maxTtftMs} ms, decode >= ${p.gate.minDecodeTokensPerSecond} tokens/s`,
    "stage 2: hill-climb the chosen model's knobs (aggregate decode tokens/s; TTFT breaks ties)",
    `  threads: ${p.space.threads.join(", ")}`,
    `  max_batch: ${p.space.maxBatch.join(", ")}`,
    `  kv_bits: ${p.space.kvBits.map((b) => b ?? "off").join(", ")}`,
    `  max_context: ${p.space.maxContext.join(", ")}`,
    `  engine: ${p.space.engine.join(", ")}`,
    `  start: ${describeKnobs(p.start)}`,
    `  ${p.replicates} replicate${p.replicates === 1 ? "" : "s"} per cell, the incumbent re-measured beside each challenger, at most ${p.budget} trials, tie within ${p.tieEpsilon * 100}%`,
    `workload: ${w.batch} row${w.batch === 1 ? "" : "s"} of ${w.promptTokens} prompt + ${w.genTokens} generated tokens, repeated for ${w.trialSeconds} s per trial`,
    `trials: ${p.storePath} (${p.recordedTrials} recorded; matching ones are reused)`,
    p.apply
      ? `apply: write the recipe to ${p.apply} (backup kept) and restart the service if it runs`
      : "apply: no (--apply writes the recipe to the config file)",
  ];
  return `${lines.join("\n")}\n`;
}
