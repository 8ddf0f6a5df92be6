/**
 * The recommendation as a recipe with a deterministic hash. The hash domain is stated and fixed:
 * the machine, the inputs (candidates with their hashes, workload, gate, search space, budget),
 * the chosen model and its knobs. Never run ids, timestamps or measured figures, which differ on
 * every run: the same machine and inputs choosing the same knobs give the same hash.
 * recipe_hash = "sha256:" + lowercase hex SHA-256 of the RFC 8785 (JCS) canonical JSON of the domain.
 */
import { createHash } from "node:crypto";
import { SETTINGS } from "../config/settings.js";
import type { ModelFile } from "../engine/engine.js";
import type { Gate } from "./feasibility.js";
import { canonicalize } from "./jcs.js";
import { type Knobs, knobsAsYaml, type SearchSpace, serveArgs } from "./knobs.js";
import type { Workload } from "./trial-runner.js";

export const RECIPE_VERSION = 1;

export interface MachineFacts {
  platform: string;
  arch: string;
  cpuModel: string;
  cpuCount: number;
  totalMemoryBytes: number;
}

/** How a run searches: its workload, gate, space, starting knobs and trial budget. */
export interface SearchSettings {
  workload: Workload;
  gate: Gate;
  space: SearchSpace;
  start: Knobs;
  replicates: number;
  budget: number;
  tieEpsilon: number;
  memoryBudgetBytes: number;
}

export interface RecipeInputs extends SearchSettings {
  machine: MachineFacts;
  candidates: readonly Pick<ModelFile, "id" | "sha256">[];
}

/** Exactly what the hash covers, with snake_case keys as the JSON output shows them. */
export interface RecipeDomain {
  recipe_version: number;
  machine: Record<string, string | number>;
  inputs: Record<string, unknown>;
  model: { id: string; sha256: string };
  knobs: Record<string, number | string | null>;
}

export function recipeDomain(
  inputs: RecipeInputs,
  model: Pick<ModelFile, "id" | "sha256">,
  knobs: Knobs,
): RecipeDomain {
  const { machine, workload, gate, space } = inputs;
  return {
    recipe_version: RECIPE_VERSION,
    machine: {
      platform: machine.platform,
      arch: machine.arch,
      cpu_model: machine.cpuModel,
      cpu_count: machine.cpuCount,
      total_memory_bytes: machine.totalMemoryBytes,
    },
    inputs: {
      candidates: inputs.candidates.map((c) => ({ id: c.id, sha256: c.sha256 })),
      workload: {
        prompt_tokens: workload.promptTokens,
        gen_tokens: workload.genTokens,
        target_batch: workload.batch,
        trial_seconds: workload.trialSeconds,
      },
      gate: { max_ttft_ms: gate.maxTtftMs, min_decode_tps: gate.minDecodeTokensPerSecond },
      axes: {
        engine: [...space.engine],
        [SETTINGS.kvBits.yaml]: space.kvBits.map((b) => b ?? null),
        [SETTINGS.maxBatch.yaml]: [...space.maxBatch],
        [SETTINGS.maxContext.yaml]: [...space.maxContext],
        [SETTINGS.threads.yaml]: [...space.threads],
      },
      start: knobsAsYaml(inputs.start),
      replicates: inputs.replicates,
      budget: inputs.budget,
      tie_epsilon: inputs.tieEpsilon,
      memory_budget_bytes: inputs.memoryBudgetBytes,
    },
    model: { id: model.id, sha256: model.sha256 },
    knobs: knobsAsYaml(knobs),
  };
}

export function recipeHash(domain: RecipeDomain): string {
  return `sha256:${createHash("sha256").update(canonicalize(domain), "utf8").digest("hex")}`;
}

/** The shell line that serves the recipe (each argument quoted when it needs to be). */
export function serveCommandLine(model: string, knobs: Knobs): string {
  return ["darkbloom", "serve", ...serveArgs(model, knobs)].map(shellQuote).join(" ");
}

function shellQuote(arg: string): string {
  return /^[A-Za-z0-9._:/=-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}
