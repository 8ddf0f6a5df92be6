import type { GgufFileInfo } from "node-llama-cpp";

/** How an embedding model pools its tokens' hidden states into one vector (`<arch>.pooling_type`). */
export type EmbeddingPooling = "mean" | "cls" | "last";

/** What makes a GGUF an embedding model, and the vectors it computes. */
export interface EmbeddingModel {
  pooling: EmbeddingPooling;
  /** The vector's length: `<arch>.embedding_length`. */
  dimensions: number;
}

/** The two `<arch>.*` keys that make an embedding model. */
interface ArchitectureKeys {
  pooling_type?: number | undefined;
  embedding_length?: number | undefined;
}

/** llama.cpp's `llama_pooling_type` values of the poolings (what `<arch>.pooling_type` holds, u32). */
export const POOLING_TYPE: Readonly<Record<EmbeddingPooling, number>> = { mean: 1, cls: 2, last: 3 };

const POOLING: Record<number, EmbeddingPooling> = Object.fromEntries(
  Object.entries(POOLING_TYPE).map(([name, value]) => [value, name as EmbeddingPooling]),
);

/**
 * The embedding model a GGUF declares, or undefined: a model whose metadata names a pooling type
 * (mean, CLS or last token) was converted as an embedding model (llama.cpp's convert script writes it
 * for Qwen3-Embedding, BGE, nomic-embed, …); a generative model has none, and its per-token states
 * are not embeddings anyone trained. Reranking (rank pooling) is another endpoint.
 */
export function embeddingModelOf(fileInfo: {
  /** GgufFileInfo's architecture metadata (`<arch>.*` without the prefix), or just the two keys read. */
  architectureMetadata?: GgufFileInfo["architectureMetadata"] | ArchitectureKeys | undefined;
}): EmbeddingModel | undefined {
  const arch = fileInfo.architectureMetadata as ArchitectureKeys | undefined;
  const pooling = arch?.pooling_type === undefined ? undefined : POOLING[arch.pooling_type];
  const dimensions = arch?.embedding_length;
  if (pooling === undefined || typeof dimensions !== "number" || dimensions < 1) return undefined;
  return { pooling, dimensions };
}
