/**
 * Vocabulary-only GGUFs: a model file's header and metadata (architecture, hyperparameters, the
 * tokenizer's tokens, merges and types, the chat template) with no tensors. llama.cpp loads them
 * with `vocab_only` (its own tokenizer test fixtures are such files), and they are what the
 * coordinator keeps per catalog model to count tokens: a few MB where the weights are gigabytes.
 */
import { checkInChildProcess, type ValidationVerdict } from "../gguf/child-check.js";
import { GgufFormatError } from "../gguf/format.js";
import { readGgufMetadata } from "../gguf/reader.js";
import { type WriteGgufResult, writeGgufFile } from "../gguf/writer.js";

/** The largest vocabulary file accepted (the largest real vocabularies, ~260k tokens, are ~20 MB). */
export const VOCABULARY_FILE_MAX_BYTES = 64 * 1024 * 1024;

/** Writes the vocabulary-only copy of the GGUF at `source` to `dest`. */
export async function writeVocabularyFile(source: string, dest: string): Promise<WriteGgufResult> {
  const meta = await readGgufMetadata(source);
  requireTokenizer(meta.kv.map((e) => e.key));
  const written = await writeGgufFile(dest, { kv: meta.kv, tensors: [], alignment: meta.alignment });
  if (written.sizeBytes > VOCABULARY_FILE_MAX_BYTES) {
    throw new GgufFormatError(
      `the vocabulary of ${source} is ${written.sizeBytes} bytes, over the ${VOCABULARY_FILE_MAX_BYTES}-byte limit`,
    );
  }
  return written;
}

function requireTokenizer(keys: string[]): void {
  for (const key of ["general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.tokens"]) {
    if (!keys.includes(key)) throw new GgufFormatError(`the GGUF has no ${key}`);
  }
}

/**
 * The child: loads the vocabulary, tokenizes a text and renders a chat prompt with the model's
 * template, as the coordinator will.
 */
const CHILD_SOURCE = `
(async () => {
  const { getLlama, resolveChatWrapper } = await import(process.env.DARKBLOOM_NLC_URL);
  const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, logLevel: "error", maxThreads: 1,
    logger: (level, message) => process.stderr.write(String(message) + "\\n") });
  const model = await llama.loadModel({ modelPath: process.env.DARKBLOOM_MODEL_PATH, vocabOnly: true, gpuLayers: 0 });
  if (model.tokenize("Hello, world", false).length === 0) throw new Error("the tokenizer makes no tokens of text");
  const wrapper = resolveChatWrapper(model);
  const state = wrapper.generateContextState({ chatHistory: [{ type: "user", text: "Hello" }, { type: "model", response: [] }] });
  if (state.contextText.tokenize(model.tokenizer).length === 0) throw new Error("the chat template renders no tokens");
  process.stdout.write(JSON.stringify({ ok: true }) + "\\n");
  process.exit(0);
})().catch((err) => {
  process.stdout.write(JSON.stringify({ ok: false, reason: String((err && err.message) || err) }) + "\\n");
  process.exit(1);
});
`;

/**
 * Vets a vocabulary file from elsewhere (an operator's upload) before any process that matters
 * loads it: structurally (bounded reader: a GGUF with a tokenizer and no tensors, within the size
 * limit), then in a throwaway child that loads it, tokenizes and renders a prompt.
 */
export async function vetVocabularyFile(path: string, timeoutMs = 60_000): Promise<ValidationVerdict> {
  try {
    const meta = await readGgufMetadata(path);
    if (meta.fileSize > VOCABULARY_FILE_MAX_BYTES) {
      return { ok: false, reason: `the file is over the ${VOCABULARY_FILE_MAX_BYTES}-byte limit` };
    }
    if (meta.tensors.length > 0) {
      return {
        ok: false,
        reason: `the file holds ${meta.tensors.length} tensors; send its vocabulary only (no weights)`,
      };
    }
    requireTokenizer(meta.kv.map((e) => e.key));
  } catch (err) {
    return {
      ok: false,
      reason: `not a vocabulary GGUF: ${err instanceof Error ? err.message : String(err)}`,
    };
  }
  return checkInChildProcess(CHILD_SOURCE, path, timeoutMs, "the vocabulary");
}
