/**
 * The candidate models of stage 1, in the order they are tried: the operator's `--candidate-models`
 * exactly as given (that order is the contract: it is never re-ranked), else every model in the data
 * directory largest file first (a proxy for parameter count at a given quantization), ties by id.
 * A file the inventory cannot read stays in the list, carrying its problem, so the walk reports it as
 * an integrity failure when it gets there rather than silently skipping it; so does an MLX checkpoint,
 * which autotune does not measure.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { MODEL_EXTENSION, scanModels } from "../config/model-inventory.js";
import { InvalidValue, SETTINGS } from "../config/settings.js";
import type { ModelFile } from "../engine/engine.js";

/** A candidate: a model file, or one the inventory could not read (`problem`). */
export interface Candidate extends ModelFile {
  problem?: string | undefined;
}

/** A bad candidate list or an unknown id: one line, exit 64. */
export class CandidateError extends Error {
  override readonly name = "CandidateError";
}

/** "a,b,c" → ids in that order; an empty cell or a repeated id is an error. */
export function parseCandidateList(raw: string): string[] {
  const cells = raw.split(",").map((c) => c.trim());
  const ids: string[] = [];
  for (const cell of cells) {
    if (cell === "")
      throw new CandidateError(`--candidate-models has an empty cell (got ${JSON.stringify(raw)})`);
    try {
      SETTINGS.models.parse(cell, { baseDir: "/", home: "/" });
    } catch (error) {
      if (error instanceof InvalidValue) throw new CandidateError(`--candidate-models ${error.message}`);
      throw error;
    }
    if (ids.includes(cell)) throw new CandidateError(`--candidate-models lists ${cell} twice`);
    ids.push(cell);
  }
  return ids;
}

export async function resolveCandidates(
  modelsDir: string,
  operator?: readonly string[],
): Promise<Candidate[]> {
  const { models, problems } = await scanModels(modelsDir);
  const broken: Candidate[] = await Promise.all(
    problems.map(async (p) => ({
      id: p.id,
      path: join(modelsDir, p.file),
      sizeBytes: (await stat(join(modelsDir, p.file)).catch(() => undefined))?.size ?? 0,
      quantization: "",
      sha256: "",
      architecture: "",
      contextLength: 0,
      problem: `the file cannot be read as a model: ${p.error}`,
    })),
  );
  // Autotune measures with the llama engine and node-llama-cpp's memory estimate: GGUF files only.
  const tunable: Candidate[] = models.map((m) =>
    m.format === "mlx"
      ? { ...m, problem: "an MLX checkpoint: autotune measures GGUF models (the llama engine) only" }
      : m,
  );
  const all: Candidate[] = [...tunable, ...broken];
  if (operator && operator.length > 0) {
    const byId = new Map(all.map((m) => [m.id, m]));
    return operator.map((id) => {
      const found = byId.get(id);
      if (!found)
        throw new CandidateError(
          `--candidate-models: ${id} is not in ${modelsDir} (available: ${all.map((m) => m.id).join(", ") || "none"})`,
        );
      return found;
    });
  }
  if (all.length === 0)
    throw new CandidateError(
      `no models in ${modelsDir} (*${MODEL_EXTENSION}); run \`darkbloom models synth tiny\` or \`darkbloom models download <url>\``,
    );
  return all.sort((a, b) => b.sizeBytes - a.sizeBytes || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
