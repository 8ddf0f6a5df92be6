import { mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { synthesizeModel } from "@darkbloom/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "./config.js";
import { removeModel, scanModels, selectModels } from "./model-inventory.js";

let dir: string;
let sha: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-models-"));
  sha = (await synthesizeModel({ shape: "tiny", seed: 5, outPath: join(dir, "tiny.gguf") })).sha256;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("model inventory", () => {
  it("describes each GGUF file from its metadata, with size and SHA-256", async () => {
    await writeFile(join(dir, "broken.gguf"), "GGUF but not really");
    await writeFile(join(dir, "notes.txt"), "ignored");
    const { models, problems } = await scanModels(dir);
    expect(models).toEqual([
      {
        id: "tiny",
        path: join(dir, "tiny.gguf"),
        sizeBytes: expect.any(Number),
        quantization: "Q8_0",
        sha256: sha,
        architecture: "qwen3",
        contextLength: 2048,
      },
    ]);
    expect(problems.map((p) => p.file)).toEqual(["broken.gguf"]);
    // The hash is cached by size and mtime, and recomputed when they change.
    const cache = JSON.parse(await readFile(join(dir, ".sha256-cache.json"), "utf8"));
    expect(cache["tiny.gguf"].sha256).toBe(sha);
    cache["tiny.gguf"].sha256 = "0".repeat(64);
    await writeFile(join(dir, ".sha256-cache.json"), JSON.stringify(cache));
    expect((await scanModels(dir)).models[0]?.sha256).toBe("0".repeat(64));
    await utimes(join(dir, "tiny.gguf"), new Date(), new Date(Date.now() + 5_000));
    expect((await scanModels(dir)).models[0]?.sha256).toBe(sha);
    await rm(join(dir, "broken.gguf"));
  });

  it("selects the configured models or all of them, naming what is missing", async () => {
    expect((await selectModels(dir, [])).map((m) => m.id)).toEqual(["tiny"]);
    expect((await selectModels(dir, ["tiny"])).map((m) => m.id)).toEqual(["tiny"]);
    await expect(selectModels(dir, ["tiny", "big"])).rejects.toThrow(
      new ConfigError(`model big is not in ${dir} (available: tiny)`),
    );
    const empty = join(dir, "empty");
    await expect(selectModels(empty, [])).rejects.toThrow(
      /^no models in .*empty; run `darkbloom models synth tiny`/,
    );
    expect(await removeModel(dir, "missing")).toBe(false);
  });
});
