/**
 * What a model needs in memory for a knob set, estimated from its GGUF header without loading the
 * weights: the same node-llama-cpp estimate the engine sizes its contexts with (model-runner.ts,
 * fitContext: weights + every row's KV cache + compute buffers), so a candidate the engine would
 * have to shrink is skipped with its reason instead of loaded.
 */
import { GgufInsights, type Llama, readGgufFileInfo } from "node-llama-cpp";
import type { ModelFile } from "../engine/engine.js";
import { estimateModelBytes } from "../engine/llama/memory-estimate.js";
import type { Knobs } from "./knobs.js";

/** The engine's prompt chunk, which is also its llama_decode batch size (llama-engine.ts). */
const PREFILL_CHUNK = 256;

export interface MemoryNeed {
  bytes: number;
  /** The context per row the estimate is for (the knob, capped at the model's trained length). */
  contextSize: number;
}

/** The GGUF header could not be read: the file is corrupt (an integrity failure). */
export class HeaderError extends Error {
  override readonly name = "HeaderError";
}

export class MemoryEstimator {
  private readonly insights = new Map<string, Promise<GgufInsights>>();

  constructor(private readonly llama: () => Promise<Llama>) {}

  async need(model: ModelFile, knobs: Knobs): Promise<MemoryNeed> {
    let insights = this.insights.get(model.path);
    if (!insights) {
      insights = this.read(model.path);
      this.insights.set(model.path, insights);
    }
    const info = await insights;
    const train = info.trainContextSize ?? 0;
    const contextSize = train > 0 ? Math.min(knobs.maxContext, train) : knobs.maxContext;
    const bytes = await estimateModelBytes(info, info.modelSize, {
      contextSize,
      sequences: knobs.maxBatch,
      batchSize: Math.max(PREFILL_CHUNK, knobs.maxBatch),
      kvBits: knobs.kvBits,
      gpuLayers: 0,
    });
    return { bytes, contextSize };
  }

  private async read(path: string): Promise<GgufInsights> {
    let info: Awaited<ReturnType<typeof readGgufFileInfo>>;
    try {
      // The header parser is JavaScript: a malformed file throws here instead of aborting llama.cpp.
      info = await readGgufFileInfo(path, { logWarnings: false, sourceType: "filesystem" });
    } catch (error) {
      throw new HeaderError(`its GGUF header cannot be read: ${(error as Error).message}`);
    }
    return GgufInsights.from(info, await this.llama());
  }
}

/** The shortest context per row a candidate may be lowered to and still count as fitting. */
export const MIN_FITTED_CONTEXT = 4096;

/**
 * The knobs a candidate starts from: `start`, with its context per row lowered, as `serve` lowers it
 * at load (model-runner.ts, fitContext), when `start.maxBatch` rows of it do not fit `budgetBytes`:
 * halved (on whole KiB of tokens) until it fits, never below `floorTokens` (at least
 * MIN_FITTED_CONTEXT). Round values, so that the recipe names a context a person would choose. A
 * model that does not fit even at the floor keeps `start`, whose estimate the memory check refuses
 * with its reason.
 */
export async function fittedStart(
  estimator: Pick<MemoryEstimator, "need">,
  model: ModelFile,
  start: Knobs,
  budgetBytes: number,
  floorTokens = MIN_FITTED_CONTEXT,
): Promise<Knobs> {
  const first = await estimator.need(model, start);
  if (first.bytes <= budgetBytes) return start;
  const floor = Math.max(MIN_FITTED_CONTEXT, floorTokens);
  // From the context the estimate was for: the knob, capped at the model's trained length.
  for (let context = halve(first.contextSize); context >= floor; context = halve(context)) {
    const knobs = { ...start, maxContext: context };
    if ((await estimator.need(model, knobs)).bytes <= budgetBytes) return knobs;
  }
  return start;
}

function halve(tokens: number): number {
  return Math.floor(tokens / 2 / 1024) * 1024;
}

/** A size for a reason line: GiB with two decimals, or smaller units for small models. */
export function formatGiB(bytes: number): string {
  if (bytes >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
  return `${(bytes / 1024 ** 2).toFixed(2)} MiB`;
}
