/**
 * Vets untrusted model files before the daemon loads them. llama.cpp answers many malformed GGUFs with
 * GGML_ASSERT → abort(), which would take the whole daemon down, so the file is first parsed by the
 * bounded JS reader (structure, truncation), then loaded in a throwaway child Node process that runs
 * one forward pass and checks the output is finite. Verdicts are cached by SHA-256.
 */
import { checkInChildProcess, readGgufMetadata, type ValidationVerdict } from "@darkbloom/models";

export type { ValidationVerdict };

export interface ModelValidatorOptions {
  /** Kill the child after this long (default 120 s). */
  timeoutMs?: number;
  /** Run the child check at all (default true); the in-process structural check always runs. */
  useChildProcess?: boolean;
}

/**
 * The child: loads the model with tensor checks, evaluates a short prompt, and reports whether the
 * next-token probability is finite. CommonJS on stdin so that no extra execArgv (like -e) leaks into
 * the binding self-test process node-llama-cpp forks.
 */
const CHILD_SOURCE = `
(async () => {
  const { getLlama } = await import(process.env.DARKBLOOM_NLC_URL);
  const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, logLevel: "error", maxThreads: 1,
    logger: (level, message) => process.stderr.write(String(message) + "\\n") });
  const model = await llama.loadModel({ modelPath: process.env.DARKBLOOM_MODEL_PATH, gpuLayers: 0, checkTensors: true });
  const context = await model.createContext({ contextSize: 128, threads: 1, sequences: 1 });
  const sequence = context.getSequence();
  let tokens = model.tokenize("Hello, world");
  if (tokens.length === 0) tokens = [model.tokens.bos ?? 0];
  const iterator = sequence.evaluateWithMetadata(tokens, { confidence: true }, { temperature: 0 });
  const first = await iterator.next();
  if (!first.done && !Number.isFinite(first.value.confidence)) throw new Error("the model produces non-finite logits");
  process.stdout.write(JSON.stringify({ ok: true }) + "\\n");
  process.exit(0);
})().catch((err) => {
  process.stdout.write(JSON.stringify({ ok: false, reason: String((err && err.message) || err) }) + "\\n");
  process.exit(1);
});
`;

/** Runs the child check on one file. */
export function validateInChildProcess(path: string, timeoutMs: number): Promise<ValidationVerdict> {
  return checkInChildProcess(CHILD_SOURCE, path, timeoutMs, "the model");
}

/** Validates model files, remembering verdicts by SHA-256 (in memory, per process). */
export class ModelValidator {
  private readonly verdicts = new Map<string, Promise<ValidationVerdict>>();
  private readonly timeoutMs: number;
  private readonly useChildProcess: boolean;

  constructor(options: ModelValidatorOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 120_000;
    this.useChildProcess = options.useChildProcess ?? true;
  }

  /** The verdict for a file; `sha256` is the cache key (the caller's hash of the file's bytes). */
  validate(path: string, sha256: string): Promise<ValidationVerdict> {
    const key = sha256.toLowerCase();
    let verdict = this.verdicts.get(key);
    if (!verdict) {
      verdict = this.check(path);
      this.verdicts.set(key, verdict);
    }
    return verdict;
  }

  /** A cached verdict, if any. */
  cached(sha256: string): Promise<ValidationVerdict> | undefined {
    return this.verdicts.get(sha256.toLowerCase());
  }

  private async check(path: string): Promise<ValidationVerdict> {
    try {
      const meta = await readGgufMetadata(path);
      if (meta.architecture === "") return { ok: false, reason: "the GGUF has no general.architecture" };
    } catch (err) {
      return {
        ok: false,
        reason: `not a valid GGUF file: ${err instanceof Error ? err.message : String(err)}`,
      };
    }
    if (!this.useChildProcess) return { ok: true };
    return validateInChildProcess(path, this.timeoutMs);
  }
}

/** The validator engines share by default, so each file is vetted once per process. */
export const sharedModelValidator = new ModelValidator();
