import { GgmlType, type GgufInsights } from "node-llama-cpp";

/** What fitContext needs of an engine's settings. */
export interface FitSettings {
  maxBatch: number;
  kvBits: 4 | 8 | undefined;
  memoryBudgetBytes: number | undefined;
}

/** A context's shape, as llama.cpp allocates it up front. */
export interface ContextShape {
  /** Tokens per row. */
  contextSize: number;
  /** Rows (parallel sequences). */
  sequences: number;
  /** The llama_decode batch size (the prompt chunk, or the rows when more). */
  batchSize: number;
  /** KV-cache quantization in bits (undefined: F16). Quantized caches need flash attention. */
  kvBits: 8 | 4 | undefined;
  /** Layers offloaded to a GPU (0 on the CPU). */
  gpuLayers: number;
}

/**
 * Bytes a model with a context of this shape takes: its weights, every row's KV cache and the compute
 * buffers, by node-llama-cpp's estimate. The one estimate the engine sizes its contexts with
 * (model-runner.ts) and autotune checks a candidate's fit with (autotune/memory-fit.ts), so the two
 * cannot disagree on what fits.
 */
export async function estimateModelBytes(
  insights: GgufInsights,
  modelBytes: number,
  shape: ContextShape,
): Promise<number> {
  const type = shape.kvBits === 8 ? GgmlType.Q8_0 : shape.kvBits === 4 ? GgmlType.Q4_0 : GgmlType.F16;
  const r = await insights.estimateContextResourceRequirementsV2({
    contextSize: shape.contextSize,
    modelGpuLayers: shape.gpuLayers,
    batchSize: shape.batchSize,
    sequences: shape.sequences,
    flashAttention: shape.kvBits !== undefined,
    kvCacheKeyType: type,
    kvCacheValueType: type,
  });
  return modelBytes + r.cpuRam + r.gpuVram;
}

/** Bytes a model with rows of `contextSize` tokens takes in all, by an engine's own estimate. */
export type MemoryNeed = (contextSize: number) => Promise<number> | number;

/** node-llama-cpp's estimate (estimateModelBytes) of a GGUF model's context of `settings.maxBatch` rows. */
export function ggufMemoryNeed(
  insights: GgufInsights,
  modelBytes: number,
  gpuLayers: number,
  batchSize: number,
  settings: FitSettings,
): MemoryNeed {
  return (contextSize) =>
    estimateModelBytes(insights, modelBytes, {
      contextSize,
      sequences: settings.maxBatch,
      batchSize,
      kvBits: settings.kvBits,
      gpuLayers,
    });
}

/**
 * The largest context per row, at most `wanted`, with which the model, `maxBatch` rows of KV cache
 * and the compute buffers fit the memory budget, by `needs` (llama.cpp and MLX allocate all of it up
 * front: 4 rows of Qwen3-0.6B's 40,960 tokens would be ~19 GB of F16 cache). At least 256 tokens (or
 * `wanted`), whether that fits or not: the caller decides what to do when even that does not.
 * Lowering is logged as a warning.
 */
export async function fitContext(
  needs: MemoryNeed,
  wanted: number,
  settings: Pick<FitSettings, "maxBatch" | "memoryBudgetBytes">,
  log: (level: "warn", message: string) => void,
): Promise<number> {
  const budget = settings.memoryBudgetBytes;
  if (budget === undefined) return wanted;
  if ((await needs(wanted)) <= budget) return wanted;
  let lo = Math.min(wanted, 256);
  let hi = wanted;
  while (hi - lo > 64) {
    const mid = Math.floor((lo + hi) / 2);
    if ((await needs(mid)) <= budget) lo = mid;
    else hi = mid;
  }
  const fitted = lo >= 64 ? lo - (lo % 64) : lo;
  const gib = (budget / 1024 ** 3).toFixed(1);
  log(
    "warn",
    `max context per row lowered from ${wanted} to ${fitted} tokens: ${settings.maxBatch} rows of ${wanted} ` +
      `would not fit the ${gib} GiB memory budget (lower --max-batch for longer contexts)`,
  );
  return fitted;
}
