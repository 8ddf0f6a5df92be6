import type { LlamaDevice, LlamaHardware } from "@darkbloom/native/llama";
import { describe, expect, it } from "vitest";
import { GPU_MEMORY_SHARE, nativeDevice, placeLayers } from "./gpu-placement.js";

const GiB = 1024 ** 3;
const cpu: LlamaDevice = {
  name: "CPU",
  description: "Intel(R) Xeon(R) Processor",
  backend: "CPU",
  type: "cpu",
  memoryFree: 24 * GiB,
  memoryTotal: 24 * GiB,
};
const h100 = (i: number, free: number): LlamaDevice => ({
  name: `CUDA${i}`,
  description: "NVIDIA H100 80GB HBM3",
  backend: "CUDA",
  type: "gpu",
  memoryFree: free,
  memoryTotal: 80 * GiB,
});

/** A model of `weights` bytes whose rows take `perToken` bytes per token, spread evenly over its layers. */
const model =
  (weights: number, perToken: number, totalLayers: number) => (layers: number) => (context: number) =>
    ((weights + perToken * context) * layers) / totalLayers;

describe("where the native core puts a model's layers", () => {
  it("on a machine without GPUs: none offloaded, the context fitted to the engine's budget", async () => {
    const need = model(GiB, 1024, 29);
    expect(
      await placeLayers({ gpus: [], totalLayers: 29, wantedContext: 4096, need, cpuBudget: 8 * GiB }),
    ).toEqual({ gpuLayers: 0, budgetBytes: 8 * GiB });
  });

  it("all layers on the GPUs when the model fits their free memory; the context fitted to that memory", async () => {
    const need = model(GiB, 1024, 29);
    const gpus = [h100(0, 40 * GiB), h100(1, 20 * GiB)];
    expect(
      await placeLayers({ gpus, totalLayers: 29, wantedContext: 4096, need, cpuBudget: 8 * GiB }),
    ).toEqual({
      gpuLayers: -1,
      budgetBytes: Math.floor(60 * GiB * GPU_MEMORY_SHARE),
    });
  });

  it("a model larger than the GPUs: the share of layers that fits, the rest on the CPU, and a warning", async () => {
    // 100 GiB of weights against 72 GiB usable: 29 * 72 / 100 = 20.9 → 20 layers.
    const need = model(100 * GiB, 0, 29);
    const placed = await placeLayers({
      gpus: [h100(0, 80 * GiB)],
      totalLayers: 29,
      wantedContext: 4096,
      need,
      cpuBudget: 64 * GiB,
    });
    expect(placed).toEqual({
      gpuLayers: 20,
      budgetBytes: 64 * GiB,
      warning:
        "the model needs 100.0 GiB and the GPUs have 72.0 GiB to give it: 20 of 29 layers offloaded, the rest computed on the CPU",
    });
    // Never "all but none": at most every layer but one when it does not fit whole.
    const barely = await placeLayers({
      gpus: [h100(0, 80 * GiB)],
      totalLayers: 29,
      wantedContext: 4096,
      need: model(72 * GiB + 1, 0, 29),
      cpuBudget: 64 * GiB,
    });
    expect(barely.gpuLayers).toBe(28);
  });
});

describe("the device the native engine reports", () => {
  it("the CPU where the addon found no GPU (a CPU build, or a CUDA build without a driver)", () => {
    const cpuBuild: LlamaHardware = { backends: ["CPU"], devices: [cpu] };
    const cudaNoDriver: LlamaHardware = { backends: ["CUDA", "CPU"], devices: [cpu] };
    expect(nativeDevice(cpuBuild)).toEqual({ accelerator: "cpu", gpus: [] });
    expect(nativeDevice(cudaNoDriver)).toEqual({ accelerator: "cpu", gpus: [] });
  });

  it("Metal on a Mac: the GPU ggml-metal found, with the memory it recommends working in", () => {
    const m3: LlamaDevice = {
      name: "MTL0",
      description: "Apple M3 Max",
      backend: "MTL",
      type: "gpu",
      memoryFree: 36 * GiB,
      memoryTotal: 36 * GiB,
    };
    const hardware: LlamaHardware = { backends: ["MTL", "BLAS", "CPU"], devices: [m3, cpu] };
    expect(nativeDevice(hardware)).toEqual({
      accelerator: "metal",
      gpus: [{ name: "Apple M3 Max", memoryBytes: 36 * GiB }],
    });
  });

  it("CUDA and each GPU with its total memory where the driver finds them", () => {
    const hardware: LlamaHardware = { backends: ["CUDA", "CPU"], devices: [h100(0, GiB), h100(1, GiB), cpu] };
    expect(nativeDevice(hardware)).toEqual({
      accelerator: "cuda",
      gpus: [
        { name: "NVIDIA H100 80GB HBM3", memoryBytes: 80 * GiB },
        { name: "NVIDIA H100 80GB HBM3", memoryBytes: 80 * GiB },
      ],
    });
  });
});
