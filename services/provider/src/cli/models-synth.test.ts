import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { scanModels } from "../config/model-inventory.js";
import { runCli } from "./program.js";
import { testIo } from "./test-io.js";

let home: string;
let dataDir: string;
beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), "darkbloom-synth-cli-"));
  dataDir = join(home, "data");
});
afterEach(async () => {
  await rm(home, { recursive: true, force: true });
});

async function run(argv: string[]) {
  const t = testIo();
  const code = await runCli(["models", "synth", ...argv, "--data-dir", dataDir], t.io, {
    defaults: { home },
  });
  return { code, stdout: t.stdout(), stderr: t.stderr() };
}

describe("models synth --format mlx", () => {
  it("writes an MLX checkpoint directory into the models folder", async () => {
    const first = await run(["tiny", "--format", "mlx", "--seed", "3"]);
    expect(first).toMatchObject({ code: 0, stderr: "" });
    const dir = join(dataDir, "models", "tiny-mlx-4bit");
    expect(first.stdout).toBe(
      `wrote tiny-mlx-4bit (qwen3, MLX 4-bit, group 64, 7 files, ${first.stdout.match(/files, ([^)]+)\)/)?.[1]}) to ${dir}\n`,
    );
    expect((await readdir(dir)).sort()).toEqual([
      "config.json",
      "generation_config.json",
      "model.safetensors",
      "model.safetensors.index.json",
      "special_tokens_map.json",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    const config = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    expect(config.quantization).toMatchObject({ group_size: 64, bits: 4 });

    const again = await run(["tiny", "--format", "mlx"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe(`darkbloom: ${dir} exists; use --force to overwrite it\n`);
    expect((await run(["tiny", "--format", "mlx", "--force"])).code).toBe(0);

    const eight = await run(["tiny-llama", "--format", "MLX", "--bits", "8", "--name", "small-llama"]);
    expect(eight.code).toBe(0);
    expect(eight.stdout).toMatch(/^wrote small-llama \(llama, MLX 8-bit, group 64, 7 files, /);
    const llama = JSON.parse(await readFile(join(dataDir, "models", "small-llama", "config.json"), "utf8"));
    expect(llama.quantization).toMatchObject({ bits: 8 });
  });

  it.each([
    [["tiny", "--format", "mlx", "--bits", "3"], "--bits must be 4 or 8 (got 3)"],
    [["tiny", "--format", "mlx", "--bits", "0x4"], "--bits must be 4 or 8 (got 0x4)"],
    [["tiny", "--format", "onnx"], "--format must be gguf or mlx (got onnx)"],
    [
      ["tiny", "--format", "mlx", "--quant", "Q8_0"],
      "--quant is for GGUF models; an MLX checkpoint takes --bits 4 or 8",
    ],
    [["tiny", "--bits", "4"], "--bits is for --format mlx; a GGUF model takes --quant"],
    [
      ["tiny-embed", "--format", "mlx"],
      "tiny-embed is an embedding model: --format mlx writes generative models only (the mlx engine computes no embeddings)",
    ],
  ])("%j exits 64 with one line", async (argv, message) => {
    const r = await run(argv);
    expect(r).toEqual({ code: 64, stdout: "", stderr: `darkbloom: ${message}\n` });
  });
});

describe("models synth tiny-embed", () => {
  it("writes the embedding model as a GGUF the inventory knows as one", async () => {
    const r = await run(["tiny-embed"]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toMatch(/^wrote tiny-embed \(qwen3, Q8_0, /);
    const { models } = await scanModels(join(dataDir, "models"));
    expect(models.map((m) => [m.id, m.embedding])).toEqual([
      ["tiny-embed", { pooling: "last", dimensions: 128 }],
    ]);
  });
});
