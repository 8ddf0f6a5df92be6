/**
 * The native engine (@darkbloom/native/llama) on a synthesized tiny Qwen3 model: the conformance
 * suite every engine passes, and where it puts a model's layers given the GPUs the addon lists.
 * Skipped only where the addon is not built and CI does not require it (DARKBLOOM_NATIVE_REQUIRED=1
 * makes a missing addon a failure).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type LlamaHardware, llamaHardware, nativeLlamaAvailable } from "@darkbloom/native/llama";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { engineConformance, request, run, tinyModel } from "../conformance.test-support.js";
import type { ModelFile } from "../engine.js";
import { NativeEngine, type NativeEngineOptions } from "./native-engine.js";

function addonTestable(): boolean {
  if (nativeLlamaAvailable()) return true;
  if (process.env.DARKBLOOM_NATIVE_REQUIRED === "1") throw new Error("the llama addon is not built");
  return false;
}

describe.skipIf(!addonTestable())("native engine", () => {
  engineConformance({
    name: "native engine",
    backend: "native-llama",
    create: (options) => new NativeEngine(options),
    sharedStepsObservable: false,
  });
});

/**
 * The placement's wiring (gpu-placement.ts decides; these check the engine acts on it): the addon
 * here computes on the CPU, so the GPUs are told to the engine, and llama.cpp, finding no GPU to
 * offload to, computes every layer on the CPU whatever it is asked; what differs is the device the
 * engine reports, the memory its context is fitted to and what it logs.
 */
describe.skipIf(!addonTestable())("native engine: the GPUs the addon lists", () => {
  const GiB = 1024 ** 3;
  let dir: string;
  let tiny: ModelFile;
  const engines: NativeEngine[] = [];
  const withGpu = (memoryFree: number): (() => LlamaHardware) => {
    const real = llamaHardware() ?? { backends: [], devices: [] };
    const gpu = {
      name: "CUDA0",
      description: "NVIDIA H100 80GB HBM3",
      backend: "CUDA",
      type: "gpu" as const,
      memoryFree,
      memoryTotal: 80 * GiB,
    };
    return () => ({ backends: ["CUDA", ...real.backends], devices: [gpu, ...real.devices] });
  };
  const engine = (options: Partial<NativeEngineOptions>, warnings: string[]): NativeEngine => {
    const created = new NativeEngine({
      maxBatch: 4,
      maxContext: 1024,
      threads: 1,
      idleTimeoutMinutes: 0,
      // So little that the CPU fit lowers the context to its floor.
      memoryBudgetBytes: 1024 * 1024,
      onLog: (level, message) => {
        if (level === "warn") warnings.push(message);
      },
      ...options,
    });
    engines.push(created);
    return created;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "darkbloom-native-gpu-"));
    tiny = await tinyModel(dir);
  });

  afterAll(async () => {
    await Promise.all(engines.map((e) => e.close()));
    await rm(dir, { recursive: true, force: true });
  });

  it("a model that fits the GPU: reported as CUDA, its context fitted to the GPU's memory, not the engine's budget", async () => {
    const warnings: string[] = [];
    const onGpu = engine({ hardware: withGpu(8 * GiB) }, warnings);
    expect(await onGpu.device()).toEqual({
      accelerator: "cuda",
      gpus: [{ name: "NVIDIA H100 80GB HBM3", memoryBytes: 80 * GiB }],
    });
    await onGpu.load(tiny);
    expect(onGpu.contextLimit(tiny.id)).toBe(1024);
    expect(warnings).toEqual([]);
    expect((await run(onGpu, request(tiny.id, "hello"))).result.finishReason).toBe("length");

    // The same model on the CPU: the 1 MiB budget lowers its context (and says so).
    const cpuWarnings: string[] = [];
    const onCpu = engine({ hardware: withGpu(8 * GiB), gpu: false }, cpuWarnings);
    expect(await onCpu.device()).toEqual({ accelerator: "cpu", gpus: [] });
    await onCpu.load(tiny);
    expect(onCpu.contextLimit(tiny.id)).toBe(256);
    expect(cpuWarnings).toEqual([
      expect.stringMatching(/^max context per row lowered from 1024 to 256 tokens/),
    ]);
  });

  it("a model larger than the GPU's free memory: the share of layers that fits, with a warning, the context fitted as on the CPU", async () => {
    const warnings: string[] = [];
    const small = engine({ hardware: withGpu(64 * 1024) }, warnings);
    await small.load(tiny);
    expect(warnings[0]).toMatch(
      /^tiny-qwen3: the model needs [\d.]+ GiB and the GPUs have 0\.0 GiB to give it: 0 of \d+ layers offloaded, the rest computed on the CPU$/,
    );
    expect(small.contextLimit(tiny.id)).toBe(256);
    expect((await run(small, request(tiny.id, "hello"))).result.finishReason).toBe("length");
  });
});
