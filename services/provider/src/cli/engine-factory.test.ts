import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { synthesizeModel } from "@darkbloom/models";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveConfig } from "../config/config.js";
import type { Engine, ModelFile, ModelFormat } from "../engine/engine.js";
import { FormatRouterEngine } from "../engine/format-router.js";
import { LlamaEngine } from "../engine/llama/llama-engine.js";
import { MlxEngine } from "../engine/mlx/mlx-engine.js";
import { NativeEngine } from "../engine/native/native-engine.js";
import { createDefaultEngine } from "./engine-factory.js";
import { UsageError } from "./io.js";

let home: string;
beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "darkbloom-engine-choice-"));
});
afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

/** A logger whose warnings the test reads. */
function recordingLogger() {
  const warnings: string[] = [];
  const logger = pino(
    { level: "warn" },
    {
      write: (line: string) => {
        warnings.push((JSON.parse(line) as { msg: string }).msg);
      },
    },
  );
  return { logger, warnings };
}

const NOT_BUILT =
  "npm run build:native with an MLX installation: DARKBLOOM_MLX_DIR, Homebrew's or the Python wheel's";

async function choose(
  engine: string | undefined,
  /** What the native addon computes on (undefined: it does not load). */
  native: "cpu" | "cuda" | "metal" | undefined,
  accelerator: "cpu" | "cuda" | "metal",
  more: {
    mlx?: string | undefined;
    formats?: ModelFormat[];
    env?: Record<string, string>;
    embeddings?: boolean;
  } = {},
) {
  const defaults = { home, totalMemoryBytes: 8 * 2 ** 30, cpuCount: 2 };
  const flags = engine === undefined ? {} : { engine };
  const { config } = resolveConfig({ flags, env: more.env ?? {}, cwd: home, defaults });
  const { logger, warnings } = recordingLogger();
  const chosen: Engine = await createDefaultEngine(config, logger, {
    nativeAccelerator: async () => native,
    accelerator: () => accelerator,
    // "mlx" in `more` but undefined: the MLX addon loads; absent: it is not built.
    mlxUnavailable: async () => ("mlx" in more ? more.mlx : NOT_BUILT),
    ...(more.formats ? { modelFormats: async () => new Set(more.formats) } : {}),
    ...(more.embeddings !== undefined ? { embeddingModels: async () => more.embeddings ?? false } : {}),
  });
  await chosen.close();
  return { chosen, warnings };
}

const checkpoint: ModelFile = {
  id: "tiny-mlx-4bit",
  path: "/models/tiny-mlx-4bit",
  format: "mlx",
  sizeBytes: 1,
  quantization: "MLX_4BIT",
  sha256: "a".repeat(64),
  architecture: "qwen3",
  contextLength: 2048,
};
const gguf: ModelFile = {
  ...checkpoint,
  id: "tiny",
  path: "/models/tiny.gguf",
  format: "gguf",
  quantization: "Q8_0",
};

describe("the engine setting", () => {
  it("auto: the native core on a machine without a GPU when its addon loads", async () => {
    const { chosen, warnings } = await choose("auto", "cpu", "cpu");
    expect(chosen).toBeInstanceOf(NativeEngine);
    expect(warnings).toEqual([]);
  });

  it("auto: node-llama-cpp on a machine with a GPU the native core was not built for", async () => {
    for (const gpu of ["cuda", "metal"] as const) {
      const { chosen, warnings } = await choose("auto", "cpu", gpu);
      expect(chosen).toBeInstanceOf(LlamaEngine);
      expect(warnings).toEqual([]);
    }
    // Not built at all on a GPU machine: node-llama-cpp's GPU binaries serve, nothing to warn about.
    const { chosen, warnings } = await choose("auto", undefined, "cuda");
    expect(chosen).toBeInstanceOf(LlamaEngine);
    expect(warnings).toEqual([]);
  });

  it("auto: the native core where it was built for the machine's GPU (CUDA, Metal) and finds it", async () => {
    const { chosen, warnings } = await choose("auto", "cuda", "cuda");
    expect(chosen).toBeInstanceOf(NativeEngine);
    expect(warnings).toEqual([]);
    // A CUDA build whose runtime finds no GPU computes on the CPU, as on a CPU machine.
    expect((await choose("auto", "cpu", "cpu")).chosen).toBeInstanceOf(NativeEngine);
    // Apple silicon: the Metal build.
    expect((await choose("auto", "metal", "metal")).chosen).toBeInstanceOf(NativeEngine);
  });

  it("auto: node-llama-cpp with one warning when the addon is not built", async () => {
    const { chosen, warnings } = await choose("auto", undefined, "cpu");
    expect(chosen).toBeInstanceOf(LlamaEngine);
    expect(warnings).toEqual([
      "the native llama addon is not built (npm run build:native): using the llama engine (node-llama-cpp)",
    ]);
  });

  it("native without the addon is a usage error; llama is node-llama-cpp whatever is built", async () => {
    await expect(choose("native", undefined, "cpu")).rejects.toBeInstanceOf(UsageError);
    await expect(choose("native", undefined, "cpu")).rejects.toThrow("run npm run build:native");
    expect((await choose("native", "cpu", "cuda")).chosen).toBeInstanceOf(NativeEngine);
    expect((await choose("llama", "cpu", "cpu")).chosen).toBeInstanceOf(LlamaEngine);
  });
});

describe("the engine setting: MLX checkpoints", () => {
  it("mlx without its addon is one usage-error line (exit 64) saying so and what to do", async () => {
    const refused = choose("mlx", "cpu", "metal");
    await expect(refused).rejects.toBeInstanceOf(UsageError);
    await expect(refused).rejects.toThrow(`the mlx engine is not built on this machine (${NOT_BUILT})`);
    // A built addon that does not load says why instead.
    await expect(
      choose("mlx", "cpu", "metal", { mlx: "its addon does not load: libmlx.so: cannot open" }),
    ).rejects.toThrow(
      "the mlx engine is not built on this machine (its addon does not load: libmlx.so: cannot open)",
    );
  });

  it("mlx where the addon loads: the mlx engine, whatever the models; flag > DARKBLOOM_ENGINE", async () => {
    const { chosen } = await choose("mlx", undefined, "cpu", { mlx: undefined, formats: ["gguf"] });
    expect(chosen).toBeInstanceOf(MlxEngine);
    expect(chosen.backend).toBe("mlx");
    const env = { DARKBLOOM_ENGINE: "mlx" };
    expect((await choose(undefined, undefined, "cpu", { mlx: undefined, env })).chosen).toBeInstanceOf(
      MlxEngine,
    );
    expect((await choose("llama", undefined, "cpu", { mlx: undefined, env })).chosen).toBeInstanceOf(
      LlamaEngine,
    );
  });

  it("auto: checkpoints by mlx, GGUF files as before, both behind one router", async () => {
    const mlxOnly = await choose("auto", "cpu", "metal", { mlx: undefined, formats: ["mlx"] });
    expect(mlxOnly.chosen).toBeInstanceOf(MlxEngine);
    const both = await choose("auto", "cpu", "cpu", { mlx: undefined, formats: ["gguf", "mlx"] });
    expect(both.chosen).toBeInstanceOf(FormatRouterEngine);
    expect(both.chosen.backend).toBe("native-llama+mlx");
    expect(both.chosen.unsupported?.(checkpoint)).toBeUndefined();
    expect(both.chosen.unsupported?.(gguf)).toBeUndefined();
    expect(
      (await choose("auto", "cpu", "metal", { mlx: undefined, formats: ["gguf", "mlx"] })).chosen.backend,
    ).toBe("llama+mlx");
    // GGUF files only: the MLX addon is not asked for.
    const ggufOnly = await choose("auto", "cpu", "cpu", { formats: ["gguf"] });
    expect(ggufOnly.chosen).toBeInstanceOf(NativeEngine);
    expect(ggufOnly.warnings).toEqual([]);
  });

  it("auto without the MLX addon: the GGUF engine with one warning, or a usage error with only checkpoints", async () => {
    const both = await choose("auto", "cpu", "cpu", { formats: ["gguf", "mlx"] });
    expect(both.chosen).toBeInstanceOf(NativeEngine);
    expect(both.warnings).toEqual([
      `the mlx engine is not built on this machine (${NOT_BUILT}): the MLX checkpoints cannot be served, the GGUF models are`,
    ]);
    // The checkpoints are then refused one by one, in words (the daemon logs each, exit 64 when none is left).
    expect(both.chosen.unsupported?.(checkpoint)).toBe(
      "model tiny-mlx-4bit is an MLX checkpoint: the native-llama engine serves GGUF files (--engine mlx or auto serves checkpoints)",
    );
    const only = choose("auto", "cpu", "metal", { formats: ["mlx"] });
    await expect(only).rejects.toBeInstanceOf(UsageError);
    await expect(only).rejects.toThrow(
      `the mlx engine is not built on this machine (${NOT_BUILT}), and the models are MLX checkpoints`,
    );
  });

  it("llama and native refuse a checkpoint, mlx a GGUF file, each with one line", async () => {
    for (const engine of ["llama", "native"]) {
      const { chosen } = await choose(engine, "cpu", "cpu");
      expect(chosen.unsupported?.(checkpoint)).toMatch(/^model tiny-mlx-4bit is an MLX checkpoint: the /);
      expect(chosen.unsupported?.(gguf)).toBeUndefined();
    }
    const { chosen } = await choose("mlx", "cpu", "cpu", { mlx: undefined });
    expect(chosen.unsupported?.(gguf)).toBe(
      "model tiny is a GGUF file: the mlx engine serves MLX checkpoints (--engine llama, native or auto serves GGUF files)",
    );
    expect(chosen.unsupported?.(checkpoint)).toBeUndefined();
  });
});

describe("the engine setting: embedding models", () => {
  const embedding: ModelFile = { ...gguf, id: "tiny-embed", embedding: { pooling: "last", dimensions: 128 } };

  it("auto on the native core: embedding GGUFs go to a llama engine beside it, the others stay", async () => {
    const { chosen, warnings } = await choose("auto", "cpu", "cpu", { embeddings: true });
    expect(warnings).toEqual([]);
    expect(chosen).toBeInstanceOf(FormatRouterEngine);
    expect(chosen.backend).toBe("native-llama+llama");
    expect(chosen.embeds(embedding)).toBe(true);
    expect(chosen.embeds(gguf)).toBe(false);
    expect(chosen.embed).toBeDefined();
    // With checkpoints too: one engine per route.
    const all = await choose("auto", "cpu", "cpu", {
      mlx: undefined,
      formats: ["gguf", "mlx"],
      embeddings: true,
    });
    expect(all.chosen.backend).toBe("native-llama+mlx+llama");
    expect(all.chosen.embeds(embedding)).toBe(true);
    expect(all.chosen.embeds(checkpoint)).toBe(false);
  });

  it("no second engine where none is needed: no embedding model, or the llama engine serves GGUF files", async () => {
    expect((await choose("auto", "cpu", "cpu", { embeddings: false })).chosen).toBeInstanceOf(NativeEngine);
    const gpu = await choose("auto", "cpu", "cuda", { embeddings: true });
    expect(gpu.chosen).toBeInstanceOf(LlamaEngine);
    expect(gpu.chosen.embeds(embedding)).toBe(true);
    // The operator's explicit choice stands: the native core serves them, without embeddings.
    const native = await choose("native", "cpu", "cpu", { embeddings: true });
    expect(native.chosen).toBeInstanceOf(NativeEngine);
    expect(native.chosen.embeds(embedding)).toBe(false);
    expect(native.chosen.embed).toBeUndefined();
  });

  it("auto reads the headers of the models to serve to know", async () => {
    const dir = await mkdtemp(join(tmpdir(), "darkbloom-embed-choice-"));
    try {
      const defaults = { home: dir, totalMemoryBytes: 8 * 2 ** 30, cpuCount: 2 };
      const { config } = resolveConfig({ flags: { engine: "auto" }, env: {}, cwd: dir, defaults });
      await mkdir(config.modelsDir, { recursive: true });
      await synthesizeModel({ shape: "tiny-embed", seed: 1, outPath: join(config.modelsDir, "e.gguf") });
      const deps = { nativeAccelerator: async () => "cpu" as const, accelerator: () => "cpu" as const };
      const chosen = await createDefaultEngine(config, pino({ level: "silent" }), deps);
      await chosen.close();
      expect(chosen.backend).toBe("native-llama+llama");
      const generative = resolveConfig({
        flags: { engine: "auto", models: ["other"] },
        env: {},
        cwd: dir,
        defaults,
      }).config;
      const alone = await createDefaultEngine(generative, pino({ level: "silent" }), deps);
      await alone.close();
      expect(alone).toBeInstanceOf(NativeEngine);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
