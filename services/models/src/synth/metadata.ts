/**
 * The GGUF keys of a transformer's hyperparameters and of a byte-level BPE tokenizer, in the order
 * the synthesizer writes them. Shared by the synthesizer and by the converter of a checkpoint's
 * tokenizer.json (models/mlx), so that a vocabulary made either way loads and counts the same.
 */
import type { GgufKv } from "../gguf/index.js";

/** What llama.cpp reads of an architecture (a ModelShape is one). */
export interface ArchitectureParams {
  architecture: string;
  contextLength: number;
  embeddingLength: number;
  blockCount: number;
  feedForwardLength: number;
  headCount: number;
  headCountKv: number;
  headDim: number;
  rmsEps: number;
  ropeFreqBase: number;
  vocabSize: number;
}

/** A byte-level BPE ("gpt2") tokenizer as GGUF stores it (a synthesized TokenizerSpec is one). */
export interface GgufBpeTokenizer {
  /** tokenizer.ggml.pre */
  pre: string;
  tokens: string[];
  tokenTypes: number[];
  merges: string[];
  bosId?: number | undefined;
  eosId?: number | undefined;
  eotId?: number | undefined;
  padId?: number | undefined;
  addBos?: boolean | undefined;
  addEos?: boolean | undefined;
  chatTemplate?: string | undefined;
}

/** `<arch>.*`: context, widths, heads, norm epsilon and RoPE base. */
export function architectureKv(p: ArchitectureParams): GgufKv[] {
  const a = p.architecture;
  return [
    { key: `${a}.context_length`, type: "u32", value: p.contextLength },
    { key: `${a}.embedding_length`, type: "u32", value: p.embeddingLength },
    { key: `${a}.block_count`, type: "u32", value: p.blockCount },
    { key: `${a}.feed_forward_length`, type: "u32", value: p.feedForwardLength },
    { key: `${a}.attention.head_count`, type: "u32", value: p.headCount },
    { key: `${a}.attention.head_count_kv`, type: "u32", value: p.headCountKv },
    { key: `${a}.attention.key_length`, type: "u32", value: p.headDim },
    { key: `${a}.attention.value_length`, type: "u32", value: p.headDim },
    { key: `${a}.attention.layer_norm_rms_epsilon`, type: "f32", value: p.rmsEps },
    { key: `${a}.rope.freq_base`, type: "f32", value: p.ropeFreqBase },
    { key: `${a}.rope.dimension_count`, type: "u32", value: p.headDim },
    { key: `${a}.vocab_size`, type: "u32", value: p.vocabSize },
  ];
}

/** `tokenizer.*`; ids and flags the tokenizer does not have are left out (llama.cpp's defaults). */
export function tokenizerKv(tok: GgufBpeTokenizer): GgufKv[] {
  const kv: GgufKv[] = [
    { key: "tokenizer.ggml.model", type: "string", value: "gpt2" },
    { key: "tokenizer.ggml.pre", type: "string", value: tok.pre },
    { key: "tokenizer.ggml.tokens", type: "array", itemType: "string", value: tok.tokens },
    { key: "tokenizer.ggml.token_type", type: "array", itemType: "i32", value: tok.tokenTypes },
    { key: "tokenizer.ggml.merges", type: "array", itemType: "string", value: tok.merges },
  ];
  const id = (key: string, value: number | undefined): void => {
    if (value !== undefined) kv.push({ key, type: "u32", value });
  };
  const flag = (key: string, value: boolean | undefined): void => {
    if (value !== undefined) kv.push({ key, type: "bool", value });
  };
  id("tokenizer.ggml.bos_token_id", tok.bosId);
  id("tokenizer.ggml.eos_token_id", tok.eosId);
  id("tokenizer.ggml.padding_token_id", tok.padId);
  flag("tokenizer.ggml.add_bos_token", tok.addBos);
  flag("tokenizer.ggml.add_eos_token", tok.addEos);
  if (tok.chatTemplate !== undefined)
    kv.push({ key: "tokenizer.chat_template", type: "string", value: tok.chatTemplate });
  id("tokenizer.ggml.eot_token_id", tok.eotId);
  return kv;
}
