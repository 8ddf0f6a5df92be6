/**
 * The Hugging Face tokenizer files of a synthesized byte-level BPE tokenizer (models/synth's
 * buildTokenizer): tokenizer.json in the `tokenizers` library's format, tokenizer_config.json and
 * special_tokens_map.json, laid out as Qwen3's and Llama 3's own files are, so that `transformers`,
 * mlx-lm and swift-transformers load them and tokenize as llama.cpp does the GGUF of the same shape.
 */
import { type TokenizerFamily, type TokenizerSpec, TokenType } from "../synth/tokenizer.js";

/** The pre-tokenizer split patterns of the families, verbatim from their tokenizer.json files. */
export const SPLIT_PATTERNS = {
  qwen2:
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  llama3:
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
} as const;

interface Family {
  pattern: string;
  normalizer: unknown;
  /** ByteLevel's trim_offsets in the pre-tokenizer (Llama 3 trims, Qwen does not). */
  trimOffsets: boolean;
  /** Llama 3 keeps a matching merge's token whole (llama.cpp's llama-bpe does too). */
  ignoreMerges: boolean;
  tokenizerClass: string;
}

const FAMILIES: Record<TokenizerFamily, Family> = {
  qwen: {
    pattern: SPLIT_PATTERNS.qwen2,
    normalizer: { type: "NFC" },
    trimOffsets: false,
    ignoreMerges: false,
    tokenizerClass: "Qwen2Tokenizer",
  },
  llama3: {
    pattern: SPLIT_PATTERNS.llama3,
    normalizer: null,
    trimOffsets: true,
    ignoreMerges: true,
    tokenizerClass: "PreTrainedTokenizerFast",
  },
};

function byteLevel(addPrefixSpace: boolean, trimOffsets: boolean, useRegex: boolean) {
  return {
    type: "ByteLevel",
    add_prefix_space: addPrefixSpace,
    trim_offsets: trimOffsets,
    use_regex: useRegex,
  };
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

function addedTokens(tok: TokenizerSpec): AddedToken[] {
  const out: AddedToken[] = [];
  for (let id = 0; id < tok.tokens.length; id++) {
    const type = tok.tokenTypes[id];
    if (type === TokenType.CONTROL || type === TokenType.USER_DEFINED)
      out.push({ id, content: tok.tokens[id]!, special: type === TokenType.CONTROL });
  }
  return out;
}

/** An AddedToken's fields in the order `tokenizers` writes them. */
function addedTokenJson(t: AddedToken, withId: boolean) {
  return {
    ...(withId ? { id: t.id } : {}),
    content: t.content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: t.special,
  };
}

/**
 * tokenizer.json. The vocabulary is written by hand to keep it in id order (a JS object puts
 * integer-like keys such as "42" first); merges use the "left right" string form, which every
 * version of `tokenizers` reads.
 */
export function tokenizerJson(tok: TokenizerSpec): string {
  const family = FAMILIES[tok.family];
  const bos = tok.tokens[tok.bosId]!;
  const postProcessor =
    tok.family === "llama3"
      ? {
          type: "Sequence",
          processors: [
            byteLevel(true, false, true),
            {
              type: "TemplateProcessing",
              single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
              pair: [
                { SpecialToken: { id: bos, type_id: 0 } },
                { Sequence: { id: "A", type_id: 0 } },
                { SpecialToken: { id: bos, type_id: 1 } },
                { Sequence: { id: "B", type_id: 1 } },
              ],
              special_tokens: { [bos]: { id: bos, ids: [tok.bosId], tokens: [bos] } },
            },
          ],
        }
      : byteLevel(false, false, false);
  const head = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens(tok).map((t) => addedTokenJson(t, true)),
    normalizer: family.normalizer,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: family.pattern }, behavior: "Isolated", invert: false },
        byteLevel(false, family.trimOffsets, false),
      ],
    },
    post_processor: postProcessor,
    decoder: tok.family === "llama3" ? byteLevel(true, true, true) : byteLevel(false, false, false),
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: family.ignoreMerges,
      vocab: "@VOCAB@",
      merges: "@MERGES@",
    },
  };
  const vocab: string[] = [];
  for (let id = 0; id < tok.tokens.length; id++) {
    if (tok.tokenTypes[id] === TokenType.NORMAL) vocab.push(`      ${JSON.stringify(tok.tokens[id])}: ${id}`);
  }
  const merges = tok.merges.map((m) => `      ${JSON.stringify(m)}`);
  return `${JSON.stringify(head, null, 2)
    .replace('"@VOCAB@"', () => `{\n${vocab.join(",\n")}\n    }`)
    .replace('"@MERGES@"', () => `[\n${merges.join(",\n")}\n    ]`)}\n`;
}

/** tokenizer_config.json: what `transformers` needs beyond tokenizer.json, the chat template first of all. */
export function tokenizerConfigJson(tok: TokenizerSpec, contextLength: number): string {
  const added = addedTokens(tok);
  const decoder: Record<string, unknown> = {};
  for (const t of added) decoder[String(t.id)] = addedTokenJson(t, false);
  const text = (id: number) => tok.tokens[id]!;
  const config: Record<string, unknown> =
    tok.family === "qwen"
      ? {
          add_bos_token: false,
          add_prefix_space: false,
          added_tokens_decoder: decoder,
          additional_special_tokens: added
            .filter((t) => t.special && t.id !== tok.padId)
            .map((t) => t.content),
          bos_token: null,
          chat_template: tok.chatTemplate,
          clean_up_tokenization_spaces: false,
          eos_token: text(tok.eosId),
          errors: "replace",
          model_max_length: contextLength,
          pad_token: text(tok.padId),
          split_special_tokens: false,
          tokenizer_class: FAMILIES.qwen.tokenizerClass,
          unk_token: null,
        }
      : {
          added_tokens_decoder: decoder,
          bos_token: text(tok.bosId),
          chat_template: tok.chatTemplate,
          clean_up_tokenization_spaces: true,
          eos_token: text(tok.eosId),
          model_input_names: ["input_ids", "attention_mask"],
          model_max_length: contextLength,
          pad_token: text(tok.padId),
          tokenizer_class: FAMILIES.llama3.tokenizerClass,
        };
  return `${JSON.stringify(config, null, 2)}\n`;
}

/** special_tokens_map.json, as `save_pretrained` writes it. */
export function specialTokensMapJson(tok: TokenizerSpec): string {
  const token = (id: number) => ({
    content: tok.tokens[id]!,
    lstrip: false,
    normalized: false,
    rstrip: false,
    single_word: false,
  });
  const map: Record<string, unknown> =
    tok.family === "qwen"
      ? {
          additional_special_tokens: addedTokens(tok)
            .filter((t) => t.special && t.id !== tok.padId)
            .map((t) => t.content),
          eos_token: token(tok.eosId),
          pad_token: token(tok.padId),
        }
      : { bos_token: token(tok.bosId), eos_token: token(tok.eosId), pad_token: token(tok.padId) };
  return `${JSON.stringify(map, null, 2)}\n`;
}
