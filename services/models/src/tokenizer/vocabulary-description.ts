/**
 * What llama.cpp knows about a loaded vocabulary that its file does not say: every token's
 * attributes after llama.cpp's per-model fix-ups, the end-of-generation set, the built-in tokens'
 * ids and texts, and the chat wrapper node-llama-cpp resolves. A worker that holds the vocabulary in
 * llama.cpp describes it once; the event loop then counts with the exact TypeScript port
 * (FastModelTokenizer) without llama.cpp and without a message per count.
 */
import type { GgufFileInfo, LlamaModel, Token } from "node-llama-cpp";
import type { ToolCallSyntax } from "../tools/syntax.js";
import type { BpeVocabulary } from "./bpe/byte-level-bpe.js";
import type { ModelTokenizer } from "./model-tokenizer.js";

export interface BuiltinTokens {
  bos?: number;
  bosString?: string;
  eos?: number;
  eosString?: string;
  eot?: number;
  eotString?: string;
  sep?: number;
  sepString?: string;
  nl?: number;
  nlString?: string;
}

export interface VocabularyDescription {
  /** llama.cpp's vocabulary type ("bpe", "spm", ...). */
  type: string;
  vocabulary: BpeVocabulary;
  builtin: BuiltinTokens;
  prependBos: boolean;
  /** Whether llama.cpp appends EOS to an embedding input (the vocabulary's add_eos). */
  appendEos: boolean;
  eog: number[];
  /** The GGUF's metadata without the tokenizer's arrays (what resolving the chat wrapper reads). */
  fileInfo: GgufFileInfo;
  /** The chat wrapper llama.cpp's side resolved (the port must resolve the same one). */
  wrapperName: string;
  /** How the model writes a function call (ModelTokenizer.toolSyntax); absent where it cannot. */
  toolSyntax?: ToolCallSyntax;
}

const ATTRIBUTE_BITS = [
  ["unknown", 1],
  ["unused", 2],
  ["normal", 4],
  ["control", 8],
  ["userDefined", 16],
  ["byte", 32],
  ["normalized", 64],
  ["lstrip", 128],
  ["rstrip", 256],
  ["singleWord", 512],
] as const;

function attributesOf(model: LlamaModel, count: number): Uint32Array {
  const out = new Uint32Array(count);
  for (let id = 0; id < count; id++) {
    const a = model.getTokenAttributes(id as Token);
    let bits = 0;
    for (const [name, bit] of ATTRIBUTE_BITS) if (a[name]) bits |= bit;
    out[id] = bits;
  }
  return out;
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.map(String) : [];
}

/** Describes the vocabulary `tokenizer` holds (run where llama.cpp has it loaded: a worker). */
export function describeVocabulary(tokenizer: ModelTokenizer): VocabularyDescription {
  const model = tokenizer.model;
  const info = model.fileInfo;
  const ggml = { ...(info.metadata.tokenizer?.ggml ?? {}) } as Record<string, unknown>;
  const tokens = strings(ggml.tokens);
  const merges = strings(ggml.merges);
  for (const big of ["tokens", "merges", "token_type", "scores"]) delete ggml[big];
  const t = model.tokens;
  const builtin: BuiltinTokens = {};
  const set = <K extends keyof BuiltinTokens>(key: K, value: BuiltinTokens[K] | null | undefined) => {
    if (value != null) builtin[key] = value;
  };
  set("bos", t.bos);
  set("bosString", t.bosString);
  set("eos", t.eos);
  set("eosString", t.eosString);
  set("eot", t.eot);
  set("eotString", t.eotString);
  set("sep", t.sep);
  set("sepString", t.sepString);
  set("nl", t.nl);
  set("nlString", t.nlString);
  const eog: number[] = [];
  for (let id = 0; id < tokens.length; id++) if (model.isEogToken(id as Token)) eog.push(id);
  return {
    type: String(model.vocabularyType),
    vocabulary: {
      model: String(ggml.model ?? ""),
      pre: String(ggml.pre ?? ""),
      ...(ggml.add_space_prefix === true ? { addSpacePrefix: true } : {}),
      tokens,
      merges,
      attributes: attributesOf(model, tokens.length),
    },
    builtin,
    prependBos: t.shouldPrependBosToken,
    appendEos: t.shouldAppendEosToken,
    eog,
    // Only plain data crosses to the event loop: the metadata, the architecture's, and the version.
    fileInfo: {
      version: info.version,
      metadata: { ...info.metadata, tokenizer: { ...info.metadata.tokenizer, ggml } },
      architectureMetadata: info.architectureMetadata,
    } as unknown as GgufFileInfo,
    wrapperName: tokenizer.wrapper.wrapperName,
    ...(tokenizer.toolSyntax ? { toolSyntax: tokenizer.toolSyntax } : {}),
  };
}
