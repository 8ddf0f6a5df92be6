import { GgmlType, type GgufInsights } from "node-llama-cpp";

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
