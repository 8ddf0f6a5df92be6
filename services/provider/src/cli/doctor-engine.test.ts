/**
 * doctor's engine check with MLX checkpoints: the engine `serve` would choose loads the checkpoint
 * through the mlx engine where the MLX addon is built; its failures name the fix for MLX (its addon)
 * or node-llama-cpp; a model of a format the chosen engine does not load fails the check in words.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { synthesizeMlxCheckpoint } from "@darkbloom/models";
import { mlxAvailable } from "@darkbloom/native/mlx";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CliDeps } from "./context.js";
import { mlxNotBuilt } from "./engine-factory.js";
import { UsageError } from "./io.js";
import { runCli } from "./program.js";
import { testIo } from "./test-io.js";

let home: string;
let dataDir: string;

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "darkbloom-doctor-mlx-"));
  dataDir = join(home, "data");
  await synthesizeMlxCheckpoint({
    shape: "tiny",
    seed: 1,
    bits: 4,
    outDir: join(dataDir, "models", "tiny-mlx-4bit"),
  });
});
afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

/** doctor's engine line, on a 4-core Linux machine of its own with a coordinator that answers. */
async function engineLine(engine: string, extra: Partial<CliDeps> = {}): Promise<string | undefined> {
  const t = testIo();
  await runCli(["doctor", "--data-dir", dataDir, "--engine", engine, "--tpm", "off", "--allow-cpu"], t.io, {
    cpuTopology: async () => ({ logicalCpus: 8, physicalCores: 4, source: "test" }),
    processes: async () => [],
    defaults: { home },
    cwd: home,
    platform: "linux",
    arch: "x64",
    fetch: async () => new Response("{}", { headers: { date: new Date().toUTCString() } }),
    ...extra,
  });
  return t
    .stdout()
    .split("\n")
    .find((l) => /^\w+\s+engine\s/.test(l));
}

describe("doctor: the engine check with MLX checkpoints", () => {
  it("an mlx engine that cannot start names the MLX build as the fix", async () => {
    const missing = mlxNotBuilt("npm run build:native with an MLX installation");
    const line = await engineLine("mlx", {
      createEngine: async () => {
        throw new UsageError(missing);
      },
    });
    expect(line).toMatch(
      /^FAIL\s+engine\s+cannot start: the mlx engine is not built on this machine \(.*\) \(fix: build the MLX addon: DARKBLOOM_MLX_DIR=<an MLX installation> npm run build:native\)$/,
    );
    // The other engines' start failures point at node-llama-cpp.
    const llama = await engineLine("llama", {
      createEngine: async () => {
        throw new Error("no prebuilt binary");
      },
    });
    expect(llama).toMatch(/\(fix: reinstall \(npm ci\) so node-llama-cpp's prebuilt binaries are present\)$/);
  });

  it("a checkpoint the chosen engine does not load fails the check in words", async () => {
    expect(await engineLine("llama")).toMatch(
      /^FAIL\s+engine\s+model tiny-mlx-4bit is an MLX checkpoint: the llama engine serves GGUF files .* \(fix: --engine auto serves each model with the engine of its format\)$/,
    );
  });

  it.skipIf(!mlxAvailable())("loads the checkpoint through the mlx engine where MLX is built", async () => {
    for (const engine of ["mlx", "auto"]) {
      expect(await engineLine(engine)).toMatch(/^PASS\s+engine\s+mlx loads tiny-mlx-4bit in \d+ ms$/);
    }
  });
});
