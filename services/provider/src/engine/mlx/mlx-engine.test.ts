/**
 * The mlx engine (@darkbloom/native/mlx) on a synthesized tiny MLX checkpoint (the Qwen3 shape of the
 * GGUF engines' tiny, 4-bit): the conformance suite every engine passes, then what is the checkpoint
 * engine's own (vocabulary cache, memory fit, vetting, formats). Skipped where the MLX addon is not
 * built (CI has no MLX; DARKBLOOM_MLX_REQUIRED=1 makes a missing addon a failure), as mlx.test.ts.
 */
import { mkdtemp, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { synthesizeMlxCheckpoint, synthesizeModel, writeVocabularyFromCheckpoint } from "@darkbloom/models";
import { loadMlxBinding, MlxModel, mlxAvailable } from "@darkbloom/native/mlx";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readCheckpoint } from "../../config/checkpoint-inventory.js";
import { engineConformance, rejection, request, run } from "../conformance.test-support.js";
import type { AcceleratorName, ModelFile } from "../engine.js";
import { MlxEngine, type MlxEngineOptions } from "./mlx-engine.js";
import { mlxKvCacheBytes, mlxMemoryNeed } from "./mlx-runner.js";
import { MlxCheckpointValidator } from "./mlx-validator.js";

function addonTestable(): boolean {
  if (mlxAvailable()) return true;
  if (process.env.DARKBLOOM_MLX_REQUIRED === "1") throw new Error("the MLX addon is not built");
  return false;
}

/** The tiny MLX checkpoint in `dir`, described as the inventory describes it. */
async function tinyCheckpoint(dir: string, name = "tiny-mlx-4bit", seed = 1): Promise<ModelFile> {
  const path = join(dir, name);
  await synthesizeMlxCheckpoint({ shape: "tiny", seed, bits: 4, outDir: path });
  return readCheckpoint(path, name);
}

/** What the addon computes on here (the CPU on a Linux build; Metal on a Mac, with its GPU listed). */
function expectedDevice() {
  const accelerator = (loadMlxBinding()?.device() ?? "cpu") as AcceleratorName;
  return accelerator === "cpu" ? { accelerator, gpus: [] } : undefined;
}

describe.skipIf(!addonTestable())("mlx engine", () => {
  engineConformance({
    name: "mlx engine",
    backend: "mlx",
    create: (options) => new MlxEngine(options),
    // As the native engine's: its engine thread starts decoding the first row while the JS thread
    // renders the next prompts (batching is checked at the addon, native/src/mlx.test.ts).
    sharedStepsObservable: false,
    model: (dir) => tinyCheckpoint(dir),
    // What the coordinator counts with: the vocabulary converted from the checkpoint's tokenizer.json.
    vocabulary: async (model, dir) => {
      const path = join(dir, `${model.id}.vocab.gguf`);
      await rm(path, { force: true });
      await writeVocabularyFromCheckpoint(model.path, path);
      return path;
    },
    ...(expectedDevice() ? { device: expectedDevice()! } : {}),
  });

  describe("mlx engine: checkpoints", () => {
    let dir: string;
    let tiny: ModelFile;
    const engines: MlxEngine[] = [];
    const engine = (options: Partial<MlxEngineOptions> = {}): MlxEngine => {
      const e = new MlxEngine({
        maxBatch: 2,
        maxContext: 512,
        threads: 1,
        prefillChunk: 64,
        idleTimeoutMinutes: 0,
        validator: false,
        ...options,
      });
      engines.push(e);
      return e;
    };

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "darkbloom-mlx-engine-"));
      tiny = await tinyCheckpoint(dir);
    });
    afterAll(async () => {
      await Promise.all(engines.map((e) => e.close()));
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it("keeps the vocabulary converted from tokenizer.json in its cache, by the checkpoint's hash", async () => {
      const cache = join(dir, "vocabularies");
      const first = engine({ vocabularyCacheDir: cache });
      await first.load(tiny);
      const path = join(cache, `${tiny.sha256}.vocab.gguf`);
      const written = await stat(path);
      const a = await run(first, request(tiny.id, "The quick brown fox", { maxTokens: 8 }));
      const second = engine({ vocabularyCacheDir: cache });
      await second.load(tiny);
      expect((await stat(path)).ino).toBe(written.ino); // reused, not converted again (a conversion renames a new file in)
      const b = await run(second, request(tiny.id, "The quick brown fox", { maxTokens: 8 }));
      expect(b.text).toBe(a.text);
      expect(b.result).toEqual(a.result);
      // MLX picks its own CPU threads: no count is claimed.
      expect(first.threadsFor(tiny.id)).toBeUndefined();
    });

    it("sizes the KV cache as the addon allocates it", async () => {
      const model = await MlxModel.load(tiny.path);
      try {
        const info = model.info();
        for (const kvBits of [undefined, 8, 4] as const) {
          const scheduler = await model.createScheduler({
            rows: 3,
            contextPerRow: 300,
            ...(kvBits ? { kvBits } : {}),
          });
          const { kvBytes } = scheduler.stats();
          await scheduler.close();
          expect(mlxKvCacheBytes(model.config, info.dtype, 3, kvBits, 300)).toBe(kvBytes);
        }
      } finally {
        await model.close();
      }
    });

    it("lowers the context to fit the memory budget, and refuses a budget nothing fits", async () => {
      const model = await MlxModel.load(tiny.path);
      const needs = mlxMemoryNeed(model.config, model.info(), {
        maxBatch: 2,
        kvBits: undefined,
        prefillChunk: 64,
      });
      await model.close();
      const warnings: string[] = [];
      const fitted = engine({
        maxContext: 1024,
        memoryBudgetBytes: needs(512),
        onLog: (level, message) => {
          if (level === "warn") warnings.push(message);
        },
      });
      await fitted.load(tiny);
      const limit = fitted.contextLimit(tiny.id) ?? 0;
      expect(limit).toBeGreaterThan(256);
      expect(limit).toBeLessThanOrEqual(512);
      expect(warnings).toEqual([
        expect.stringContaining(`max context per row lowered from 1024 to ${limit} tokens: 2 rows of 1024`),
      ]);
      const err = await rejection(engine({ memoryBudgetBytes: needs(1) - 1, onLog: () => {} }).load(tiny));
      expect(err.code).toBe("model_load_failed");
      expect(err.message).toMatch(/cannot be loaded: does not fit: needs .* GiB for 2 rows of 256 tokens/);
    });

    it("vets checkpoints in a child before loading: a broken one is refused, the daemon unharmed", async () => {
      const validator = new MlxCheckpointValidator();
      const truncated = await tinyCheckpoint(dir, "truncated", 2);
      await truncate(join(truncated.path, "model.safetensors"), 1000);
      const e1 = await rejection(engine({ validator }).load({ ...truncated, sha256: "1".repeat(64) }));
      expect(e1.code).toBe("model_load_failed");
      expect(e1.message).toMatch(/not a valid MLX checkpoint: .*truncated/);

      // Structurally sound, but its tensors do not match config.json: only loading says so (in the child).
      const mismatched = await tinyCheckpoint(dir, "mismatched", 3);
      const config = JSON.parse(await readFile(join(mismatched.path, "config.json"), "utf8"));
      await writeFile(join(mismatched.path, "config.json"), JSON.stringify({ ...config, hidden_size: 256 }));
      const e2 = await rejection(engine({ validator }).load({ ...mismatched, sha256: "2".repeat(64) }));
      expect(e2.code).toBe("model_load_failed");
      expect(e2.message).toMatch(/^model mismatched \(.*\) cannot be loaded: /);
      expect(await validator.validate(tiny.path, tiny.sha256)).toEqual({ ok: true });
    });

    it("refuses a GGUF file with one line, before anything is loaded", async () => {
      const path = join(dir, "tiny.gguf");
      const synth = await synthesizeModel({ shape: "tiny", seed: 1, outPath: path });
      const gguf: ModelFile = { ...tiny, id: "tiny", path, format: "gguf", sha256: synth.sha256 };
      const e = engine();
      expect(e.unsupported(gguf)).toBe(
        "model tiny is a GGUF file: the mlx engine serves MLX checkpoints (--engine llama, native or auto serves GGUF files)",
      );
      const err = await rejection(e.load(gguf));
      expect(err).toMatchObject({ code: "model_load_failed", message: e.unsupported(gguf) });
      expect(e.stats().loadedModels).toEqual([]);
    });
  });
});
