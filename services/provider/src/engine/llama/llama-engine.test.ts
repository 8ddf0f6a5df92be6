/**
 * The llama engine on a synthesized tiny Qwen3 model (real llama.cpp, CPU): the conformance suite
 * every engine passes (conformance.test-support.ts), then what is the llama engine's own (the memory
 * budget by node-llama-cpp's estimate, threads "auto", vetting untrusted files).
 */
import { mkdtemp, rm, stat, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type GgufKv, planModel, synthesizeModel, writeGgufFile } from "@darkbloom/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  engineConformance,
  PROMPTS,
  rejection,
  request as requestFor,
  run,
  tinyModel,
} from "../conformance.test-support.js";
import type { GenerationRequest, ModelFile, SamplingOptions } from "../engine.js";
import { LlamaEngine, type LlamaEngineOptions } from "./llama-engine.js";
import { ModelValidator } from "./model-validator.js";

engineConformance({
  name: "llama engine",
  backend: "llama",
  create: (options) => new LlamaEngine({ ...options, gpu: false }),
  longPromptThreads: 2,
});

let dir: string;
let tiny: ModelFile;
const engines: LlamaEngine[] = [];

function makeEngine(options: Partial<LlamaEngineOptions> = {}): LlamaEngine {
  const engine = new LlamaEngine({
    maxBatch: 4,
    maxContext: 1024,
    threads: 1,
    prefillChunk: 64,
    idleTimeoutMinutes: 0,
    gpu: false,
    ...options,
  });
  engines.push(engine);
  return engine;
}

function request(
  input: string | GenerationRequest["input"],
  sampling: Partial<SamplingOptions> = {},
  model = tiny.id,
): GenerationRequest {
  return requestFor(model, input, sampling);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-engine-"));
  tiny = await tinyModel(dir);
});

afterAll(async () => {
  await Promise.all(engines.map((e) => e.close()));
  await rm(dir, { recursive: true, force: true });
});

describe("llama engine options", () => {
  it("lowers each row's context to fit the memory budget, and enforces the lowered limit", async () => {
    const roomy = makeEngine({ maxContext: 2048, memoryBudgetBytes: 64 * 1024 ** 3, validator: false });
    await roomy.load(tiny);
    expect(roomy.contextLimit(tiny.id)).toBe(2048);
    await roomy.close();

    // Far too little memory: the context falls to the 256-token floor.
    const logs: string[] = [];
    const tight = makeEngine({
      maxContext: 2048,
      memoryBudgetBytes: 1,
      validator: false,
      onLog: (level, message) => logs.push(`${level} ${message}`),
    });
    await tight.load(tiny);
    expect(tight.contextLimit(tiny.id)).toBe(256);
    expect(logs.join("\n")).toMatch(/warn max context per row lowered from 2048 to 256 tokens/);
    const err = await rejection(tight.generate(request(PROMPTS[0]!, { maxTokens: 300 }), () => {}).done);
    expect(err.code).toBe("context_length_exceeded");
    expect((await run(tight, request(PROMPTS[0]!, { maxTokens: 8 }))).result.generatedTokens).toBe(8);
    await tight.close();
  });

  it('resolves threads "auto" per model at load, reports and logs the choice; an explicit count wins', async () => {
    const logs: string[] = [];
    // A 16-core machine of its own: tiny (~1 MiB) still gets one thread, a bigger file would get more.
    const auto = makeEngine({
      threads: "auto",
      topology: { logicalCpus: 32, physicalCores: 16, source: "test" },
      validator: false,
      onLog: (level, message) => logs.push(`${level} ${message}`),
    });
    expect(auto.threadsFor(tiny.id)).toBeUndefined();
    await auto.load(tiny);
    expect(auto.threadsFor(tiny.id)).toBe(1);
    expect(logs.join("\n")).toMatch(
      /info loaded tiny-qwen3: 4 rows x 1024 tokens, 1 CPU thread \(auto: 1 thread: [\d.]+ MiB of weights, one thread per 64 MiB \(16 physical cores\)\)/,
    );
    expect((await run(auto, request(PROMPTS[0]!, { maxTokens: 4 }))).result.generatedTokens).toBe(4);
    await auto.close();

    const explicit = makeEngine({ threads: 2, validator: false, onLog: (l, m) => logs.push(`${l} ${m}`) });
    await explicit.load(tiny);
    expect(explicit.threadsFor(tiny.id)).toBe(2);
    expect(logs.at(-1)).toMatch(/2 CPU threads \(set by --threads\)$/);
    await explicit.close();
    expect(() => makeEngine({ threads: 0 })).toThrow("threads must be a positive integer");
  });
});

describe("untrusted model files", () => {
  it("refuses malformed GGUFs without harming the process, and caches the verdict", async () => {
    const validator = new ModelValidator();
    const engine = makeEngine({ validator });

    // Truncated: caught by the bounded GGUF reader.
    const truncated = join(dir, "truncated.gguf");
    await synthesizeModel({ shape: "tiny", seed: 9, outPath: truncated });
    const { size } = await stat(truncated);
    await truncate(truncated, Math.floor(size / 2));
    const t = await rejection(
      engine.load({ ...tiny, id: "truncated", path: truncated, sha256: "0".repeat(64) }),
    );
    expect(t).toMatchObject({ code: "model_load_failed" });
    expect(t.message).toMatch(/truncated/);

    // Structurally valid, but llama.cpp aborts on it (embedding_length 0 → GGML_ASSERT → SIGABRT).
    const plan = planModel("tiny", "Q8_0", 1);
    const crasher = join(dir, "crasher.gguf");
    await writeGgufFile(crasher, {
      kv: plan.kv.map(
        (e): GgufKv => (e.key === "qwen3.embedding_length" ? { key: e.key, type: "u32", value: 0 } : e),
      ),
      tensors: plan.tensors,
    });
    const sha = "1".repeat(64);
    const c = await rejection(engine.load({ ...tiny, id: "crasher", path: crasher, sha256: sha }));
    expect(c.code).toBe("model_load_failed");
    expect(c.message).toMatch(/crashed llama\.cpp|SIGABRT|code 134/);
    expect((await validator.cached(sha))?.ok).toBe(false);
    const started = performance.now();
    await rejection(engine.load({ ...tiny, id: "crasher", path: crasher, sha256: sha }));
    expect(performance.now() - started).toBeLessThan(200); // cached: no second child
    expect((await rejection(engine.generate(request("hi", {}, "crasher"), () => {}).done)).code).toBe(
      "model_not_found",
    );

    // The engine still serves good models.
    await engine.load(tiny);
    expect((await run(engine, request(PROMPTS[0]!, { maxTokens: 4 }))).result.generatedTokens).toBe(4);
  });
});
