import { describe, expect, it } from "vitest";
import { ScriptedEngine } from "../testing/scripted-engine.js";
import type { EngineDevice, ModelFile } from "./engine.js";
import { FormatRouterEngine } from "./format-router.js";

const model = (id: string, format: "gguf" | "mlx"): ModelFile => ({
  id,
  path: `/models/${id}${format === "gguf" ? ".gguf" : ""}`,
  format,
  sizeBytes: 1000,
  quantization: format === "gguf" ? "Q8_0" : "MLX_4BIT",
  sha256: "a".repeat(64),
  architecture: "qwen3",
  contextLength: 2048,
});

const METAL: EngineDevice = {
  accelerator: "metal",
  gpus: [{ name: "Apple M2 GPU", memoryBytes: 16 * 2 ** 30 }],
};

function router(devices: { gguf?: EngineDevice; mlx?: EngineDevice } = {}) {
  const gguf = new ScriptedEngine({
    backend: "native-llama",
    device: devices.gguf,
    decodeTokensPerSecond: 50,
  });
  const mlx = new ScriptedEngine({ backend: "mlx", device: devices.mlx, decodeTokensPerSecond: 80 });
  return { gguf, mlx, engine: new FormatRouterEngine({ gguf, mlx }) };
}

const request = (modelId: string) => ({
  id: `r-${modelId}`,
  model: modelId,
  input: { kind: "text" as const, prompt: "hello there" },
  sampling: { temperature: 0, topP: 1, topK: 0, stop: [], maxTokens: 4 },
});

describe("the format router", () => {
  it("serves each model with the engine of its format, as one engine", async () => {
    const { gguf, mlx, engine } = router();
    expect(engine.backend).toBe("native-llama+mlx");
    await engine.load(model("tiny", "gguf"));
    await engine.load(model("tiny-mlx", "mlx"));
    expect(gguf.loads).toEqual(["tiny"]);
    expect(mlx.loads).toEqual(["tiny-mlx"]);
    const results = await Promise.all(
      ["tiny", "tiny-mlx"].map((id) => engine.generate(request(id), () => {}).done),
    );
    expect(results.map((r) => r.generatedTokens)).toEqual([4, 4]);
    expect(gguf.submitted.map((r) => r.model)).toEqual(["tiny"]);
    expect(mlx.submitted.map((r) => r.model)).toEqual(["tiny-mlx"]);

    const stats = engine.stats();
    expect(stats.loadedModels).toEqual(["tiny", "tiny-mlx"]);
    expect(stats.requestsCompleted).toBe(2);
    expect(stats.tokensGenerated).toBe(8);
    expect(stats.totalSlots).toBe(8);
    expect(stats.decodeTokensPerSecond).toBe(80);

    // A model never loaded is the GGUF engine's to refuse, as any engine refuses it.
    expect(() => engine.generate(request("nope"), () => {})).toThrow(/model nope is not loaded/);
    await engine.unload("tiny-mlx");
    expect(mlx.unloads).toEqual(["tiny-mlx"]);
    expect(gguf.unloads).toEqual([]);
    await engine.close();
    expect(gguf.closed && mlx.closed).toBe(true);
  });

  it("a model id that changes format moves to the other engine", async () => {
    const { gguf, mlx, engine } = router();
    await engine.load(model("m", "gguf"));
    await engine.load(model("m", "mlx"));
    expect(gguf.unloads).toEqual(["m"]);
    expect(mlx.loads).toEqual(["m"]);
  });

  it("reports the CPU when either engine computes on it, else the GPUs of both", async () => {
    expect(await router({ gguf: METAL, mlx: METAL }).engine.device()).toEqual(METAL);
    expect(await router({ gguf: METAL }).engine.device()).toEqual({ accelerator: "cpu", gpus: [] });
    expect(await router().engine.device()).toEqual({ accelerator: "cpu", gpus: [] });
  });
});

describe("the embeddings route", () => {
  const embedding: ModelFile = {
    ...model("embed", "gguf"),
    embedding: { pooling: "last", dimensions: 8 },
  };
  const inputs = [{ kind: "embedding" as const, text: "hello there" }];

  it("serves embedding GGUFs with the engine that embeds, the others with the GGUF engine", async () => {
    const gguf = new ScriptedEngine({ backend: "native-llama" });
    const llama = new ScriptedEngine({ backend: "llama", embeddingModels: ["embed"] });
    const engine = new FormatRouterEngine({ gguf, embeddings: llama });
    expect(engine.backend).toBe("native-llama+llama");
    await engine.load(model("tiny", "gguf"));
    await engine.load(embedding);
    expect(gguf.loads).toEqual(["tiny"]);
    expect(llama.loads).toEqual(["embed"]);
    expect(engine.embeds(embedding)).toBe(true);
    expect(engine.embeds(model("tiny", "gguf"))).toBe(false);
    const result = await engine.embed({ id: "e1", model: "embed", inputs }).done;
    expect(result.embeddings).toHaveLength(1);
    expect(llama.embedded.map((r) => r.id)).toEqual(["e1"]);
    // A generative model's engine refuses, as the engine of a model that is not an embedding model.
    const refused = await engine.embed({ id: "e2", model: "tiny", inputs }).done.catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: "invalid_request" });
    // One never loaded: the engine that embeds fails it model_not_found.
    const unknown = await engine.embed({ id: "e3", model: "nope", inputs }).done.catch((e: unknown) => e);
    expect(unknown).toMatchObject({ code: "model_not_found" });
    await engine.generate(request("tiny"), () => {}).done;
    expect(gguf.submitted.map((r) => r.model)).toEqual(["tiny"]);
    expect(engine.stats()).toMatchObject({ requestsCompleted: 2, loadedModels: ["tiny", "embed"] });
    await engine.close();
    expect(gguf.closed && llama.closed).toBe(true);
  });

  it("without an embeddings route, embedding GGUFs stay with the GGUF engine", async () => {
    const gguf = new ScriptedEngine({ backend: "llama", embeddingModels: ["embed"] });
    const mlx = new ScriptedEngine({ backend: "mlx" });
    const engine = new FormatRouterEngine({ gguf, mlx });
    await engine.load(embedding);
    expect(gguf.loads).toEqual(["embed"]);
    expect(engine.embeds(embedding)).toBe(true);
    expect(engine.embeds(model("m", "mlx"))).toBe(false);
    expect((await engine.embed({ id: "e", model: "embed", inputs }).done).promptTokens).toEqual([3]);
  });
});
