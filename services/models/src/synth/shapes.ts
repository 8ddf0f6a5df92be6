import type { EmbeddingPooling } from "../embeddings/embedding-model.js";
import type { TokenizerFamily } from "./tokenizer.js";

/** The hyperparameters of a transformer to synthesize. */
export interface ModelShape {
  /** Shape id, e.g. "qwen3-0.6b". */
  name: string;
  /** Written to general.name. */
  displayName: string;
  architecture: "qwen3" | "llama";
  tokenizer: TokenizerFamily;
  /** Only the chat-format special tokens (test models), instead of the family's full special-token block. */
  minimalSpecials: boolean;
  embeddingLength: number;
  blockCount: number;
  feedForwardLength: number;
  headCount: number;
  headCountKv: number;
  /** Per-head key/value width; written as key_length/value_length. */
  headDim: number;
  vocabSize: number;
  contextLength: number;
  rmsEps: number;
  ropeFreqBase: number;
  /** No output.weight: the output projection reuses token_embd (llama.cpp duplicates it at load). */
  tiedEmbeddings: boolean;
  /** Qwen3's per-head RMS norms on Q and K (attn_q_norm / attn_k_norm). */
  qkNorm: boolean;
  /** Standard deviation of the random weights. */
  initStd: number;
  /**
   * An embedding model: how its token states are pooled into one vector, written as
   * `<arch>.pooling_type` (embeddings/embedding-model.ts reads it back). Absent: a generative model.
   */
  pooling?: EmbeddingPooling | undefined;
}

export const MODEL_SHAPES = {
  /** ~0.5 MB Qwen3-architecture model for tests: loads and generates in milliseconds. */
  tiny: {
    name: "tiny",
    displayName: "Darkbloom Tiny Qwen3 (synthetic)",
    architecture: "qwen3",
    tokenizer: "qwen",
    minimalSpecials: true,
    embeddingLength: 128,
    blockCount: 2,
    feedForwardLength: 384,
    headCount: 4,
    headCountKv: 2,
    headDim: 32,
    vocabSize: 512,
    contextLength: 2048,
    rmsEps: 1e-6,
    ropeFreqBase: 1_000_000,
    tiedEmbeddings: true,
    qkNorm: true,
    initStd: 0.08,
  },
  /**
   * `tiny` converted as an embedding model, the way llama.cpp converts Qwen3-Embedding: last-token
   * pooling, and `<|endoftext|>` appended to every input as EOS (the template's `<|im_end|>` becomes
   * EOT). Its embedding is the final hidden state of that token, 128 wide.
   */
  "tiny-embed": {
    name: "tiny-embed",
    displayName: "Darkbloom Tiny Qwen3 Embedding (synthetic)",
    architecture: "qwen3",
    tokenizer: "qwen",
    minimalSpecials: true,
    embeddingLength: 128,
    blockCount: 2,
    feedForwardLength: 384,
    headCount: 4,
    headCountKv: 2,
    headDim: 32,
    vocabSize: 512,
    contextLength: 2048,
    rmsEps: 1e-6,
    ropeFreqBase: 1_000_000,
    tiedEmbeddings: true,
    qkNorm: true,
    initStd: 0.08,
    pooling: "last",
  },
  /** The same size with the Llama architecture, Llama 3's chat format and an untied output. */
  "tiny-llama": {
    name: "tiny-llama",
    displayName: "Darkbloom Tiny Llama (synthetic)",
    architecture: "llama",
    tokenizer: "llama3",
    minimalSpecials: true,
    embeddingLength: 128,
    blockCount: 2,
    feedForwardLength: 384,
    headCount: 4,
    headCountKv: 2,
    headDim: 32,
    vocabSize: 512,
    contextLength: 2048,
    rmsEps: 1e-5,
    ropeFreqBase: 500_000,
    tiedEmbeddings: false,
    qkNorm: false,
    initStd: 0.08,
  },
  /** Qwen3-0.6B's real shapes (596M parameters; ~630 MB at Q8_0). */
  "qwen3-0.6b": {
    name: "qwen3-0.6b",
    displayName: "Qwen3 0.6B (synthetic)",
    architecture: "qwen3",
    tokenizer: "qwen",
    minimalSpecials: false,
    embeddingLength: 1024,
    blockCount: 28,
    feedForwardLength: 3072,
    headCount: 16,
    headCountKv: 8,
    headDim: 128,
    vocabSize: 151936,
    contextLength: 40960,
    rmsEps: 1e-6,
    ropeFreqBase: 1_000_000,
    tiedEmbeddings: true,
    qkNorm: true,
    initStd: 0.02,
  },
  /** Qwen3-Embedding-0.6B's real shapes: Qwen3-0.6B converted as an embedding model (last-token pooling). */
  "qwen3-embedding-0.6b": {
    name: "qwen3-embedding-0.6b",
    displayName: "Qwen3 Embedding 0.6B (synthetic)",
    architecture: "qwen3",
    tokenizer: "qwen",
    minimalSpecials: false,
    embeddingLength: 1024,
    blockCount: 28,
    feedForwardLength: 3072,
    headCount: 16,
    headCountKv: 8,
    headDim: 128,
    vocabSize: 151936,
    contextLength: 32768,
    rmsEps: 1e-6,
    ropeFreqBase: 1_000_000,
    tiedEmbeddings: true,
    qkNorm: true,
    initStd: 0.02,
    pooling: "last",
  },
  /** Llama-3.2-1B's real shapes (1.24B parameters; ~1.3 GB at Q8_0). */
  "llama-3.2-1b": {
    name: "llama-3.2-1b",
    displayName: "Llama 3.2 1B Instruct (synthetic)",
    architecture: "llama",
    tokenizer: "llama3",
    minimalSpecials: false,
    embeddingLength: 2048,
    blockCount: 16,
    feedForwardLength: 8192,
    headCount: 32,
    headCountKv: 8,
    headDim: 64,
    vocabSize: 128256,
    contextLength: 131072,
    rmsEps: 1e-5,
    ropeFreqBase: 500_000,
    tiedEmbeddings: true,
    qkNorm: false,
    initStd: 0.02,
  },
} as const satisfies Record<string, ModelShape>;

export type ModelShapeName = keyof typeof MODEL_SHAPES;

export function isModelShapeName(name: string): name is ModelShapeName {
  return Object.hasOwn(MODEL_SHAPES, name);
}
