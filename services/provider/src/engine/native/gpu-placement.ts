/**
 * Where the native core puts a model's layers. The addon computes on the GPUs its build found (a
 * CUDA build, or Metal on a Mac: native/scripts/llama-gpu.mjs); llama.cpp then offloads the layers it
 * is told to,
 * splitting them across the GPUs by their free memory, and keeps each offloaded layer's KV cache
 * beside it. It allocates everything up front and fails a load that does not fit, so the layers and
 * the context are chosen here, by the same estimate the CPU fit uses (memory-estimate.ts):
 * - every layer when the model with the shortest context (256 tokens) fits the GPUs' free memory;
 *   the context is then fitted to that memory;
 * - otherwise the share of layers that fits (a warning says how many), the rest on the CPU, and the
 *   context fitted to the engine's memory budget as on a CPU machine.
 */
import { type LlamaDevice, type LlamaHardware, llamaGpus } from "@darkbloom/native/llama";
import type { AcceleratorName, EngineDevice } from "../engine.js";
import type { MemoryNeed } from "../llama/memory-estimate.js";

/**
 * Of the GPUs' free memory, what a model may take: CUDA's own context, cuBLAS's workspace and
 * fragmentation are not in the estimate.
 */
export const GPU_MEMORY_SHARE = 0.9;

/** The shortest context fitContext gives a model: what a model must fit with to go on the GPUs whole. */
const MIN_CONTEXT = 256;

export interface Placement {
  /** Layers to offload: 0 on the CPU, -1 for all of them (llama.cpp's "all"). */
  gpuLayers: number;
  /** The memory the context is fitted to (undefined: no budget). */
  budgetBytes: number | undefined;
  /** Why not every layer went to the GPUs (a warning to log), when some did not. */
  warning?: string;
}

/**
 * The layers to offload and the budget to fit the context to. `need(layers)` is the model's memory
 * need with that many layers offloaded; `cpuBudget` the engine's memory budget.
 */
export async function placeLayers(o: {
  gpus: LlamaDevice[];
  totalLayers: number;
  wantedContext: number;
  need: (gpuLayers: number) => MemoryNeed;
  cpuBudget: number | undefined;
}): Promise<Placement> {
  if (o.gpus.length === 0) return { gpuLayers: 0, budgetBytes: o.cpuBudget };
  const free = o.gpus.reduce((sum, gpu) => sum + gpu.memoryFree, 0);
  const gpuBudget = Math.floor(free * GPU_MEMORY_SHARE);
  const smallest = await o.need(o.totalLayers)(Math.min(o.wantedContext, MIN_CONTEXT));
  if (smallest <= gpuBudget) return { gpuLayers: -1, budgetBytes: gpuBudget };
  const layers = Math.max(0, Math.min(o.totalLayers - 1, Math.floor((o.totalLayers * gpuBudget) / smallest)));
  const gib = (bytes: number) => (bytes / 1024 ** 3).toFixed(1);
  return {
    gpuLayers: layers,
    budgetBytes: o.cpuBudget,
    warning:
      `the model needs ${gib(smallest)} GiB and the GPUs have ${gib(gpuBudget)} GiB to give it: ` +
      `${layers} of ${o.totalLayers} layers offloaded, the rest computed on the CPU`,
  };
}

/** ggml's backend names (its registry's) for the accelerators a provider reports. */
const ACCELERATORS: Record<string, AcceleratorName> = { CUDA: "cuda", MTL: "metal", Vulkan: "vulkan" };

/** The GPUs the addon found that the engine computes on. */
export function nativeGpus(hardware: LlamaHardware): LlamaDevice[] {
  return llamaGpus(hardware).filter((d) => ACCELERATORS[d.backend] !== undefined);
}

/** The engine's device, from the GPUs the addon found (none: the CPU). */
export function nativeDevice(hardware: LlamaHardware): EngineDevice {
  const gpus = nativeGpus(hardware);
  const first = gpus[0];
  if (!first) return { accelerator: "cpu", gpus: [] };
  return {
    accelerator: ACCELERATORS[first.backend] ?? "cpu",
    gpus: gpus.map((g) => ({ name: g.description || g.name, memoryBytes: g.memoryTotal })),
  };
}
