/**
 * `serve` with models of a format the chosen engine does not load: the real engine factory, nothing
 * loaded, no coordinator. The only model being of the other format is a usage error (exit 64), one
 * line naming the model and what serves it; never a load failure or a crash.
 */
import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { synthesizeMlxCheckpoint, synthesizeModel } from "@darkbloom/models";
import { mlxAvailable } from "@darkbloom/native/mlx";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "./program.js";
import { testIo } from "./test-io.js";

let home: string;
let mlxData: string;
let ggufData: string;

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "darkbloom-serve-formats-"));
  mlxData = join(home, "mlx");
  ggufData = join(home, "gguf");
  await synthesizeMlxCheckpoint({
    shape: "tiny",
    seed: 1,
    bits: 4,
    outDir: join(mlxData, "models", "tiny-mlx-4bit"),
  });
  await mkdir(join(ggufData, "models"), { recursive: true });
  await synthesizeModel({ shape: "tiny", seed: 1, outPath: join(ggufData, "models", "tiny.gguf") });
});
afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

async function serve(dataDir: string, engine: string) {
  const io = testIo();
  const args = ["serve", "--no-join", "--data-dir", dataDir, "--engine", engine];
  const code = await runCli([...args, "--metrics-listen", "off", "--log-level", "silent"], io.io, {
    defaults: { home },
    cwd: home,
  });
  // Refused before anything was loaded, and the PID file released.
  await expect(stat(join(dataDir, "darkbloom.pid"))).rejects.toThrow();
  return { code, stderr: io.stderr() };
}

describe("serve: a model of another format than the engine's", () => {
  it("an MLX checkpoint with --engine llama or native is a usage error naming it", async () => {
    for (const engine of ["llama", "native"]) {
      const { code, stderr } = await serve(mlxData, engine);
      expect(code).toBe(64);
      const backend = engine === "native" ? "native-llama" : "llama";
      // native without its addon stops before (its own usage error): either way one line, exit 64.
      if (!stderr.includes("needs the llama addon"))
        expect(stderr).toBe(
          `darkbloom: model tiny-mlx-4bit is an MLX checkpoint: the ${backend} engine serves GGUF files ` +
            "(--engine mlx or auto serves checkpoints)\n",
        );
    }
  });

  it("a GGUF file with --engine mlx is a usage error naming it (or the mlx preflight, without MLX)", async () => {
    const { code, stderr } = await serve(ggufData, "mlx");
    expect(code).toBe(64);
    // toBe compares with Object.is: an asymmetric matcher would never equal the string.
    if (mlxAvailable())
      expect(stderr).toBe(
        "darkbloom: model tiny is a GGUF file: the mlx engine serves MLX checkpoints (--engine llama, native or auto serves GGUF files)\n",
      );
    else expect(stderr).toMatch(/^darkbloom: the mlx engine is not built on this machine \(.+\)\n$/);
  });
});
