/**
 * What differs between model formats above the engines: how a model is vetted before it is loaded,
 * and the one line an engine refuses a model of the format it does not load with.
 */
import type { ModelFile, ModelFormat } from "./engine.js";
import type { ValidationVerdict } from "./llama/model-validator.js";

/**
 * Vets a model before it is loaded (a crash on a malformed file must happen elsewhere than in the
 * daemon): ModelValidator for GGUF files, MlxCheckpointValidator for checkpoint directories.
 */
export interface ModelVetter {
  /** The verdict for the model at `path`; `sha256` (its identity hash) keys a cache of verdicts. */
  validate(path: string, sha256: string): Promise<ValidationVerdict>;
}

/** Why an engine (`backend`, loading `served`) cannot serve `file`, or undefined when it can. */
export function formatRefusal(file: ModelFile, backend: string, served: ModelFormat): string | undefined {
  const format = file.format ?? "gguf";
  if (format === served) return undefined;
  return format === "mlx"
    ? `model ${file.id} is an MLX checkpoint: the ${backend} engine serves GGUF files ` +
        "(--engine mlx or auto serves checkpoints)"
    : `model ${file.id} is a GGUF file: the ${backend} engine serves MLX checkpoints ` +
        "(--engine llama, native or auto serves GGUF files)";
}
