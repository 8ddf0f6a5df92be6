import { createHash } from "node:crypto";
import { cp, mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type SynthesizeMlxResult, synthesizeMlxCheckpoint, synthesizeModel } from "@darkbloom/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHECKPOINT_MANIFEST, DOWNLOAD_MARKER } from "../download/repository.js";
import { checkpointSha256 } from "./checkpoint-inventory.js";
import { ConfigError } from "./config.js";
import {
  modelFormats,
  removeModel,
  scanModels,
  selectModels,
  servesEmbeddingModels,
} from "./model-inventory.js";

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
        format: "gguf",
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

describe("model inventory: embedding models", () => {
  it("reads the pooling an embedding GGUF declares; says whether the models to serve hold one", async () => {
    const models = join(dir, "with-embed");
    await mkdir(models);
    await cp(join(dir, "tiny.gguf"), join(models, "tiny.gguf"));
    expect(await servesEmbeddingModels(models, [])).toBe(false);
    await synthesizeModel({ shape: "tiny-embed", seed: 5, outPath: join(models, "embed.gguf") });
    const { models: found } = await scanModels(models);
    expect(found.map((m) => [m.id, m.embedding])).toEqual([
      ["embed", { pooling: "last", dimensions: 128 }],
      ["tiny", undefined],
    ]);
    expect("embedding" in (found[1] ?? {})).toBe(false);
    expect(await servesEmbeddingModels(models, [])).toBe(true);
    expect(await servesEmbeddingModels(models, ["embed"])).toBe(true);
    expect(await servesEmbeddingModels(models, ["tiny"])).toBe(false);
    expect(await servesEmbeddingModels(join(dir, "nowhere"), [])).toBe(false);
  });
});

/** The identity of a checkpoint by its definition, from the synthesizer's own list of its files. */
function identityOf(synth: SynthesizeMlxResult): string {
  const lines = synth.files
    .map((f) => ({ path: Buffer.from(f.path), line: `${f.sha256}  ${f.path}\n` }))
    .sort((a, b) => Buffer.compare(a.path, b.path));
  const hash = createHash("sha256");
  for (const { line } of lines) hash.update(line);
  return hash.digest("hex");
}

describe("model inventory: MLX checkpoints", () => {
  let models: string;
  let synth: SynthesizeMlxResult;
  beforeAll(async () => {
    models = await mkdtemp(join(tmpdir(), "darkbloom-checkpoints-"));
    await synthesizeModel({ shape: "tiny", seed: 5, outPath: join(models, "tiny.gguf") });
    synth = await synthesizeMlxCheckpoint({
      shape: "tiny",
      seed: 1,
      bits: 4,
      outDir: join(models, "tiny-mlx-4bit"),
    });
  });
  afterAll(async () => {
    await rm(models, { recursive: true, force: true });
  });

  it("lists a checkpoint directory beside the GGUF files, named by the directory, hashed over its files", async () => {
    await mkdir(join(models, "notes")); // a directory of something else is not a model
    await mkdir(join(models, "half.partial")); // a checkpoint still being synthesized is not one yet
    await writeFile(join(models, "half.partial", "config.json"), "{}");
    const { models: found, problems } = await scanModels(models);
    expect(problems).toEqual([]);
    expect(found.map((m) => [m.id, m.format])).toEqual([
      ["tiny", "gguf"],
      ["tiny-mlx-4bit", "mlx"],
    ]);
    expect(found[1]).toEqual({
      id: "tiny-mlx-4bit",
      path: join(models, "tiny-mlx-4bit"),
      format: "mlx",
      sizeBytes: synth.sizeBytes,
      quantization: "MLX_4BIT",
      sha256: identityOf(synth),
      architecture: "qwen3",
      contextLength: 2048,
    });
    // Each file's hash is cached by size and mtime under `<id>/<path>`.
    const cache = JSON.parse(await readFile(join(models, ".sha256-cache.json"), "utf8"));
    expect(cache["tiny-mlx-4bit/model.safetensors"].sha256).toBe(
      synth.files.find((f) => f.path === "model.safetensors")?.sha256,
    );
    expect(await modelFormats(models, [])).toEqual(new Set(["gguf", "mlx"]));
    expect(await modelFormats(models, ["tiny-mlx-4bit"])).toEqual(new Set(["mlx"]));
    expect(await modelFormats(join(models, "nowhere"), [])).toEqual(new Set());
  });

  it("a downloaded checkpoint: its manifest and marker are not part of it; an unfinished one is not a model", async () => {
    const dl = join(models, "downloaded");
    await cp(join(models, "tiny-mlx-4bit"), dl, { recursive: true });
    const manifest = {
      format: "darkbloom.checkpoint.v1",
      files: synth.files.map((f) => ({ path: f.path, size: f.sizeBytes, sha256: f.sha256 })),
    };
    await writeFile(join(dl, CHECKPOINT_MANIFEST), JSON.stringify(manifest));
    let scan = await scanModels(models);
    // The same files, synthesized or downloaded: the same identity.
    expect(scan.models.find((m) => m.id === "downloaded")?.sha256).toBe(identityOf(synth));

    await writeFile(join(dl, DOWNLOAD_MARKER), "{}");
    scan = await scanModels(models);
    expect(scan.models.map((m) => m.id)).not.toContain("downloaded");
    expect(scan.problems).toEqual([
      {
        file: "downloaded",
        id: "downloaded",
        format: "mlx",
        error: "its download is incomplete: run `darkbloom models download` again to resume it",
      },
    ]);
    await expect(selectModels(models, ["downloaded"])).rejects.toThrow(
      `model downloaded in ${models} is not usable: its download is incomplete`,
    );
    await rm(join(dl, DOWNLOAD_MARKER));
    await rm(join(dl, "tokenizer.json"));
    expect((await scanModels(models)).problems[0]?.error).toBe(
      "tokenizer.json is missing since it was downloaded",
    );
    expect(await removeModel(models, "downloaded")).toBe(true);
    await expect(stat(dl)).rejects.toThrow();
  });

  it("any changed, added or removed file changes the identity", async () => {
    const copy = join(models, "copy");
    await cp(join(models, "tiny-mlx-4bit"), copy, { recursive: true });
    const base = await checkpointSha256(copy);
    expect(base).toBe(identityOf(synth));
    await writeFile(join(copy, "README.md"), "# notes\n");
    const added = await checkpointSha256(copy);
    expect(added).not.toBe(base);
    await writeFile(join(copy, "README.md"), "# Notes\n");
    expect(await checkpointSha256(copy)).not.toBe(added);
    await rm(join(copy, "README.md"));
    expect(await checkpointSha256(copy)).toBe(base);
    await rm(join(copy, "generation_config.json"));
    expect(await checkpointSha256(copy)).not.toBe(base);
    await rm(copy, { recursive: true });
  });

  it("refuses a checkpoint the mlx engine cannot load, and one whose id a GGUF file has", async () => {
    const bad = join(models, "bad");
    await mkdir(bad);
    await writeFile(join(bad, "config.json"), JSON.stringify({ model_type: "gpt2" }));
    await writeFile(join(bad, "model.safetensors"), "");
    const clash = join(models, "tiny");
    await cp(join(models, "tiny-mlx-4bit"), clash, { recursive: true });
    const { models: found, problems } = await scanModels(models);
    expect(found.map((m) => m.id)).toEqual(["tiny", "tiny-mlx-4bit"]);
    expect(found[0]?.format).toBe("gguf");
    expect(problems).toEqual([
      {
        file: "bad",
        id: "bad",
        format: "mlx",
        error: expect.stringMatching(/model_type gpt2 is not supported/),
      },
      {
        file: "tiny",
        id: "tiny",
        format: "mlx",
        error: "its id is taken by tiny.gguf: rename the directory",
      },
    ]);
    await rm(bad, { recursive: true });
    await rm(clash, { recursive: true });
    expect(await removeModel(models, "notes")).toBe(false);
  });
});
