/**
 * The vocabulary-only GGUF of a Hugging Face checkpoint (an MLX one: config.json, tokenizer.json,
 * tokenizer_config.json), which is what provider and coordinator count tokens with (ModelTokenizer,
 * FastModelTokenizer). It holds what llama.cpp's convert_hf_to_gguf.py writes for a byte-level BPE
 * tokenizer (get_vocab_base and gguf-py's SpecialVocab): tokens by id with "[PADn]" for ids no token
 * has, token types (added tokens are CONTROL when special or shaped like "<|…|>", else
 * USER_DEFINED), merges as "left right", the pre-tokenizer's name, bos/eos/padding ids from
 * tokenizer_config.json then config.json, add_bos/add_eos, the chat template; and the
 * architecture's hyperparameters, which llama.cpp reads before it loads a vocabulary.
 *
 * What llama.cpp cannot reproduce is refused, naming it: another model than BPE, byte fallback,
 * subword prefixes, a normalizer other than NFC (which llama.cpp skips, as the converter does), a
 * pre-tokenizer other than Qwen 2/3's, Llama 3's or GPT-2's, a decoder other than ByteLevel.
 */
import { readFile, rm, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import type { GgufKv } from "../gguf/index.js";
import { type WriteGgufResult, writeGgufFile } from "../gguf/writer.js";
import {
  type ArchitectureParams,
  architectureKv,
  type GgufBpeTokenizer,
  tokenizerKv,
} from "../synth/metadata.js";
import { bytesToUnicode, TokenType } from "../synth/tokenizer.js";
import { VOCABULARY_FILE_MAX_BYTES } from "../tokenizer/vocabulary-file.js";
import { SPLIT_PATTERNS } from "./hf-tokenizer.js";

export class TokenizerJsonError extends Error {
  override readonly name = "TokenizerJsonError";
}

/** The parsed files of a checkpoint that make its vocabulary. */
export interface CheckpointTokenizerFiles {
  config: unknown;
  tokenizer: unknown;
  tokenizerConfig?: unknown;
  /** chat_template.jinja, which newer `transformers` writes instead of tokenizer_config's chat_template. */
  chatTemplateFile?: string;
  /** general.name (the converter takes it from the directory's name). */
  name?: string;
}

export interface CheckpointVocabulary {
  kv: GgufKv[];
  architecture: ArchitectureParams;
  tokenizer: GgufBpeTokenizer;
}

/** config.json model_type → GGUF architecture. */
const ARCHITECTURES: Record<string, string> = { llama: "llama", qwen2: "qwen2", qwen3: "qwen3" };

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const fail = (message: string): never => {
  throw new TokenizerJsonError(message);
};
const show = (v: unknown): string => {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 160 ? `${text.slice(0, 160)}…` : text;
};

function architectureOf(config: unknown, vocabSize: number): ArchitectureParams {
  if (!isObject(config)) return fail("config.json is not a JSON object");
  const modelType = config.model_type;
  const architecture =
    typeof modelType === "string" && Object.hasOwn(ARCHITECTURES, modelType)
      ? ARCHITECTURES[modelType]!
      : undefined;
  if (!architecture)
    fail(`config.json: model_type ${show(modelType)} is not one of ${Object.keys(ARCHITECTURES).join(", ")}`);
  const count = (key: string, fallback?: number): number => {
    const v = config[key] ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0)
      fail(`config.json: ${key} must be a positive integer (got ${show(v)})`);
    return v as number;
  };
  const real = (key: string, fallback?: number): number => {
    const v = config[key] ?? fallback;
    if (typeof v !== "number" || !(v > 0))
      fail(`config.json: ${key} must be a positive number (got ${show(v)})`);
    return v as number;
  };
  const hidden = count("hidden_size");
  const heads = count("num_attention_heads");
  return {
    architecture: architecture!,
    contextLength: count("max_position_embeddings"),
    embeddingLength: hidden,
    blockCount: count("num_hidden_layers"),
    feedForwardLength: count("intermediate_size"),
    headCount: heads,
    headCountKv: count("num_key_value_heads", heads),
    headDim: count("head_dim", Math.floor(hidden / heads)),
    rmsEps: real("rms_norm_eps"),
    ropeFreqBase: real("rope_theta", 10_000),
    vocabSize,
  };
}

/** tokenizer.ggml.pre for the pre-tokenizer, or a refusal naming it. */
function preTokenizerOf(pre: unknown): string {
  if (
    isObject(pre) &&
    pre.type === "Sequence" &&
    Array.isArray(pre.pretokenizers) &&
    pre.pretokenizers.length === 2
  ) {
    const [split, level] = pre.pretokenizers as unknown[];
    if (
      isObject(split) &&
      split.type === "Split" &&
      split.behavior === "Isolated" &&
      (split.invert ?? false) === false &&
      isObject(split.pattern) &&
      typeof split.pattern.Regex === "string" &&
      isObject(level) &&
      level.type === "ByteLevel" &&
      level.add_prefix_space === false &&
      level.use_regex === false
    ) {
      if (split.pattern.Regex === SPLIT_PATTERNS.qwen2) return "qwen2";
      if (split.pattern.Regex === SPLIT_PATTERNS.llama3) return "llama-bpe";
      fail(
        `tokenizer.json: the pre-tokenizer's split pattern ${show(split.pattern.Regex)} is none llama.cpp implements (Qwen 2/3's or Llama 3's)`,
      );
    }
  }
  if (
    isObject(pre) &&
    pre.type === "ByteLevel" &&
    pre.add_prefix_space === false &&
    (pre.use_regex ?? true) === true
  )
    return "gpt-2";
  return fail(
    `tokenizer.json: pre_tokenizer ${show(pre)} is none llama.cpp implements (a Split of Qwen 2/3's or Llama 3's pattern then ByteLevel, or GPT-2's ByteLevel)`,
  );
}

function checkModel(model: unknown): { vocab: Json; merges: unknown[] } {
  if (!isObject(model)) return fail("tokenizer.json has no model object");
  if (model.type !== "BPE")
    fail(
      `tokenizer.json: model.type is ${show(model.type)}; only byte-level BPE ("BPE") can be written as a GGUF vocabulary`,
    );
  if (model.byte_fallback === true)
    fail("tokenizer.json: model.byte_fallback is set (SentencePiece-style BPE, not byte-level)");
  for (const key of ["continuing_subword_prefix", "end_of_word_suffix"]) {
    const v = model[key];
    if (v !== undefined && v !== null && v !== "")
      fail(`tokenizer.json: model.${key} is ${show(v)}; llama.cpp has none`);
  }
  if (typeof model.dropout === "number" && model.dropout > 0) fail("tokenizer.json: model.dropout is set");
  if (!isObject(model.vocab)) fail("tokenizer.json: model.vocab is not an object");
  if (!Array.isArray(model.merges)) fail("tokenizer.json: model.merges is not a list");
  return { vocab: model.vocab as Json, merges: model.merges as unknown[] };
}

/** convert_hf_to_gguf's does_token_look_special. */
function looksSpecial(text: string): boolean {
  return (
    ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].includes(text) ||
    (text.startsWith("<|") && text.endsWith("|>")) ||
    (text.startsWith("<｜") && text.endsWith("｜>")) ||
    (text.startsWith("<unused") && text.endsWith(">"))
  );
}

/** A tokenizer_config `<typ>_token` entry's text (a string, or an AddedToken object). */
function tokenText(entry: unknown): string | undefined {
  if (typeof entry === "string") return entry;
  if (isObject(entry) && typeof entry.content === "string") return entry.content;
  return undefined;
}

/** The GGUF vocabulary of a checkpoint's parsed tokenizer files. */
export function vocabularyFromTokenizerJson(files: CheckpointTokenizerFiles): CheckpointVocabulary {
  const tj = files.tokenizer;
  if (!isObject(tj)) return fail("tokenizer.json is not a JSON object");
  const tc: Json =
    files.tokenizerConfig === undefined
      ? {}
      : isObject(files.tokenizerConfig)
        ? files.tokenizerConfig
        : fail("tokenizer_config.json is not a JSON object");
  const { vocab, merges: rawMerges } = checkModel(tj.model);
  const normalizer = tj.normalizer ?? null;
  if (normalizer !== null && !(isObject(normalizer) && normalizer.type === "NFC"))
    fail(`tokenizer.json: normalizer ${show(normalizer)} is not one llama.cpp applies (none, or NFC)`);
  const pre = preTokenizerOf(tj.pre_tokenizer);
  if (!isObject(tj.decoder) || tj.decoder.type !== "ByteLevel")
    fail(`tokenizer.json: decoder ${show(tj.decoder)} is not ByteLevel`);

  const byId = new Map<number, string>();
  for (const [text, id] of Object.entries(vocab)) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0)
      fail(`tokenizer.json: the id of ${show(text)} is ${show(id)}`);
    if (byId.has(id as number))
      fail(`tokenizer.json: id ${id} is given to both ${show(byId.get(id as number))} and ${show(text)}`);
    byId.set(id as number, text);
  }
  for (const ch of bytesToUnicode())
    if (!Object.hasOwn(vocab, ch))
      fail(`tokenizer.json: the byte token ${show(ch)} is missing (not a byte-level vocabulary)`);
  const added = new Map<number, { content: string; special: boolean }>();
  const addedList = tj.added_tokens ?? [];
  if (!Array.isArray(addedList)) fail("tokenizer.json: added_tokens is not a list");
  for (const [i, t] of (addedList as unknown[]).entries()) {
    if (
      !isObject(t) ||
      typeof t.content !== "string" ||
      t.content === "" ||
      typeof t.id !== "number" ||
      !Number.isInteger(t.id) ||
      t.id < 0
    )
      fail(`tokenizer.json: added_tokens[${i}] is not {id, content}`);
    const { id, content, special } = t as { id: number; content: string; special?: unknown };
    const regular = byId.get(id);
    if (regular !== undefined && regular !== content)
      fail(`tokenizer.json: added token ${show(content)} has the id ${id} of ${show(regular)}`);
    added.set(id, { content, special: special === true });
  }
  let maxId = -1;
  for (const id of [...byId.keys(), ...added.keys()]) if (id > maxId) maxId = id;
  const configVocab = isObject(files.config) ? files.config.vocab_size : undefined;
  const vocabSize = configVocab === undefined ? maxId + 1 : (configVocab as number);
  if (typeof vocabSize !== "number" || !Number.isInteger(vocabSize) || vocabSize <= maxId)
    fail(`config.json: vocab_size ${show(configVocab)} does not cover the tokenizer's ids (up to ${maxId})`);
  const architecture = architectureOf(files.config, vocabSize);

  const tokens: string[] = new Array(vocabSize);
  const tokenTypes: number[] = new Array(vocabSize);
  for (let id = 0; id < vocabSize; id++) {
    const a = added.get(id);
    const text = a?.content ?? byId.get(id);
    if (text === undefined) {
      tokens[id] = `[PAD${id}]`;
      tokenTypes[id] = TokenType.UNUSED;
    } else if (!a) {
      tokens[id] = text;
      tokenTypes[id] = TokenType.NORMAL;
    } else if (a.special || looksSpecial(text)) {
      tokens[id] = text;
      tokenTypes[id] = TokenType.CONTROL;
    } else {
      tokens[id] = text.replaceAll("\u2581", " ");
      tokenTypes[id] = TokenType.USER_DEFINED;
    }
  }

  const merges = rawMerges.map((m, i): string => {
    let left: string;
    let right: string;
    if (typeof m === "string") {
      const space = m.indexOf(" ", 1);
      if (space < 0) fail(`tokenizer.json: merge ${i} ${show(m)} is not "left right"`);
      left = m.slice(0, space);
      right = m.slice(space + 1);
    } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string") {
      // As gguf-py: a space inside a part is written as the byte-level space.
      [left, right] = (m as [string, string]).map((p) => p.replaceAll(" ", "\u0120")) as [string, string];
    } else return fail(`tokenizer.json: merge ${i} is neither "left right" nor [left, right]`);
    for (const part of [left, right, left + right]) {
      if (!Object.hasOwn(vocab, part))
        fail(
          `tokenizer.json: merge ${i} (${show(m)}) makes or uses ${show(part)}, which is not in the vocabulary`,
        );
    }
    return `${left} ${right}`;
  });

  // SpecialVocab: tokenizer_config's <typ>_token (matched against added_tokens), then config.json's <typ>_token_id.
  const special = (typ: string): number | undefined => {
    const text = tokenText(tc[`${typ}_token`]);
    if (text !== undefined) {
      for (const [id, a] of added) if (a.content === text) return id;
    }
    const id = isObject(files.config) ? files.config[`${typ}_token_id`] : undefined;
    return typeof id === "number" && Number.isInteger(id) && id >= 0 && id < vocabSize ? id : undefined;
  };
  const bosId = special("bos");
  const eosId = special("eos");
  const template = templateEnds(tj.post_processor);
  const bosText = bosId === undefined ? undefined : tokens[bosId];
  const eosText = eosId === undefined ? undefined : tokens[eosId];
  const flag = (key: string, fromTemplate: boolean | undefined): boolean | undefined =>
    typeof tc[key] === "boolean" ? (tc[key] as boolean) : fromTemplate;
  const addBos = flag("add_bos_token", template.first === undefined ? undefined : template.first === bosText);
  const addEos = flag("add_eos_token", template.last === undefined ? undefined : template.last === eosText);

  const kv: GgufKv[] = [];
  const chat = chatTemplates(tc.chat_template ?? files.chatTemplateFile);
  const tokenizer: GgufBpeTokenizer = {
    pre,
    tokens,
    tokenTypes,
    merges,
    bosId,
    eosId,
    padId: special("pad"),
    addBos,
    addEos,
    chatTemplate: chat.main,
  };
  kv.push(
    { key: "general.architecture", type: "string", value: architecture.architecture },
    { key: "general.type", type: "string", value: "model" },
  );
  if (files.name) kv.push({ key: "general.name", type: "string", value: files.name });
  kv.push(...architectureKv(architecture), ...tokenizerKv(tokenizer));
  for (const [name, text] of chat.named)
    kv.push({ key: `tokenizer.chat_template.${name}`, type: "string", value: text });
  return { kv, architecture, tokenizer };
}

/** The special tokens a TemplateProcessing post-processor puts first and last around a single text. */
function templateEnds(post: unknown): { first?: string; last?: string } {
  const processors = isObject(post) ? (Array.isArray(post.processors) ? post.processors : [post]) : [];
  for (const p of processors) {
    if (!isObject(p) || p.type !== "TemplateProcessing" || !Array.isArray(p.single) || p.single.length < 2)
      continue;
    const idOf = (piece: unknown) =>
      isObject(piece) && isObject(piece.SpecialToken) && typeof piece.SpecialToken.id === "string"
        ? piece.SpecialToken.id
        : undefined;
    const first = idOf(p.single[0]);
    const last = idOf(p.single[p.single.length - 1]);
    return { ...(first === undefined ? {} : { first }), ...(last === undefined ? {} : { last }) };
  }
  return {};
}

/** A chat template is a string, or a list of {name, template} whose "default" is the main one. */
function chatTemplates(value: unknown): { main?: string; named: [string, string][] } {
  if (value === undefined || value === null) return { named: [] };
  if (typeof value === "string") return { main: value, named: [] };
  if (!Array.isArray(value))
    return fail("tokenizer_config.json: chat_template is neither a string nor a list");
  let main: string | undefined;
  const named: [string, string][] = [];
  for (const t of value) {
    if (
      !isObject(t) ||
      typeof t.name !== "string" ||
      typeof t.template !== "string" ||
      !/^[A-Za-z0-9_.-]+$/.test(t.name)
    )
      fail("tokenizer_config.json: a chat_template entry is not {name, template}");
    const { name, template } = t as { name: string; template: string };
    if (name === "default") main = template;
    else named.push([name, template]);
  }
  return main === undefined ? { named } : { main, named };
}

/** Bounds on the files read: the largest real tokenizer.json files are tens of MB. */
const TOKENIZER_JSON_MAX_BYTES = 128 * 1024 * 1024;
const SMALL_JSON_MAX_BYTES = 16 * 1024 * 1024;

async function readText(path: string, limit: number, required: boolean): Promise<string | undefined> {
  const info = await stat(path).catch(() => undefined);
  if (!info) return required ? fail(`${path} is missing`) : undefined;
  if (info.size > limit) fail(`${path} is ${info.size} bytes, over the ${limit}-byte limit`);
  return readFile(path, "utf8");
}

async function readJson(path: string, limit: number, required: boolean): Promise<unknown> {
  const text = await readText(path, limit, required);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    return fail(`${path} is not JSON (${(err as Error).message})`);
  }
}

/** Reads config.json, tokenizer.json, tokenizer_config.json and chat_template.jinja of a checkpoint directory. */
export async function readCheckpointTokenizerFiles(dir: string): Promise<CheckpointTokenizerFiles> {
  const config = await readJson(join(dir, "config.json"), SMALL_JSON_MAX_BYTES, true);
  const tokenizer = await readJson(join(dir, "tokenizer.json"), TOKENIZER_JSON_MAX_BYTES, true);
  const tokenizerConfig = await readJson(join(dir, "tokenizer_config.json"), SMALL_JSON_MAX_BYTES, false);
  const chatTemplateFile = await readText(join(dir, "chat_template.jinja"), SMALL_JSON_MAX_BYTES, false);
  return {
    config,
    tokenizer,
    ...(tokenizerConfig === undefined ? {} : { tokenizerConfig }),
    ...(chatTemplateFile === undefined ? {} : { chatTemplateFile }),
    name: basename(dir),
  };
}

/** Writes the vocabulary-only GGUF of the checkpoint in `dir` to `dest`. */
export async function writeVocabularyFromCheckpoint(dir: string, dest: string): Promise<WriteGgufResult> {
  const { kv } = vocabularyFromTokenizerJson(await readCheckpointTokenizerFiles(dir));
  const written = await writeGgufFile(dest, { kv, tensors: [] });
  if (written.sizeBytes > VOCABULARY_FILE_MAX_BYTES) {
    await rm(dest, { force: true });
    fail(
      `the vocabulary of ${dir} is ${written.sizeBytes} bytes, over the ${VOCABULARY_FILE_MAX_BYTES}-byte limit`,
    );
  }
  return written;
}
