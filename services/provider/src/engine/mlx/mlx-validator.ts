/**
 * Vets MLX checkpoints before the daemon loads them, as ModelValidator vets GGUF files: MLX checks
 * what it reads (its safetensors loader throws on a bad header), but a checkpoint whose tensors do not
 * fit its config.json could still take MLX somewhere it aborts, and that must happen in a throwaway
 * child, not in the daemon. So: config.json and every .safetensors header are read by the strict JS
 * readers first (structure, truncation, tiling), then a child Node process loads the checkpoint with
 * the MLX addon and runs one forward pass whose logits must be finite. Verdicts are cached by the
 * checkpoint's identity hash.
 */
import { checkInChildProcess, readSafetensorsHeader, type ValidationVerdict } from "@darkbloom/models";
import { mlxAddonPath, readMlxCheckpoint } from "@darkbloom/native/mlx";
import { errorMessage } from "../meters.js";
import type { ModelVetter } from "../model-host.js";

export interface MlxValidatorOptions {
  /** Kill the child after this long (default 120 s). */
  timeoutMs?: number;
  /** Run the child check at all (default true); the in-process structural checks always run. */
  useChildProcess?: boolean;
}

/**
 * The child (CommonJS on stdin, as checkInChildProcess runs it): the addon itself, given the config
 * the parent read (readMlxCheckpoint), so that it needs none of the package's JavaScript.
 */
function childSource(addon: string, config: unknown): string {
  return `
(async () => {
  const addon = require(${JSON.stringify(addon)});
  const model = await addon.loadModel(${JSON.stringify(config)});
  const info = model.info();
  const tokens = Int32Array.from({ length: Math.min(4, info.nVocab) }, (_, i) => i);
  const logits = await model.logits(tokens);
  if (logits.length !== tokens.length * info.nVocab) throw new Error("the forward pass returned " + logits.length + " logits");
  for (const x of logits) if (!Number.isFinite(x)) throw new Error("the checkpoint produces non-finite logits");
  model.close();
  process.stdout.write(JSON.stringify({ ok: true }) + "\\n");
  process.exit(0);
})().catch((err) => {
  process.stdout.write(JSON.stringify({ ok: false, reason: String((err && err.message) || err) }) + "\\n");
  process.exit(1);
});
`;
}

export class MlxCheckpointValidator implements ModelVetter {
  private readonly verdicts = new Map<string, Promise<ValidationVerdict>>();
  private readonly timeoutMs: number;
  private readonly useChildProcess: boolean;

  constructor(options: MlxValidatorOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 120_000;
    this.useChildProcess = options.useChildProcess ?? true;
  }

  /** The verdict for the checkpoint directory at `dir`; `sha256` (its identity hash) is the cache key. */
  validate(dir: string, sha256: string): Promise<ValidationVerdict> {
    const key = sha256.toLowerCase();
    let verdict = this.verdicts.get(key);
    if (!verdict) {
      verdict = this.check(dir);
      this.verdicts.set(key, verdict);
    }
    return verdict;
  }

  private async check(dir: string): Promise<ValidationVerdict> {
    let config: Awaited<ReturnType<typeof readMlxCheckpoint>>;
    try {
      config = await readMlxCheckpoint(dir);
      for (const file of config.files) await readSafetensorsHeader(file);
    } catch (err) {
      return { ok: false, reason: `not a valid MLX checkpoint: ${errorMessage(err)}` };
    }
    if (!this.useChildProcess) return { ok: true };
    let addon: string;
    try {
      addon = mlxAddonPath();
    } catch {
      return { ok: false, reason: "the MLX addon is not built on this machine" };
    }
    return checkInChildProcess(childSource(addon, config), dir, this.timeoutMs, "the checkpoint");
  }
}

/** The validator mlx engines share by default, so each checkpoint is vetted once per process. */
export const sharedMlxValidator = new MlxCheckpointValidator();
