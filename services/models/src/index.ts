// What provider and coordinator must compute identically about a model: the GGUF format, file
// hashes, the request input and its chat-template prompt, token counts, and the synthesizer that
// writes test models of real architectures (GGUF files, and MLX checkpoints with the bridge from their
// tokenizer.json to a vocabulary GGUF).
export {
  BodyError,
  type ChatMessage,
  type EmbeddingInput,
  type GenerationInput,
  LOGIT_BIAS_MAX_ENTRIES,
  MAX_TOP_LOGPROBS,
  readGenerationInput,
  readLogitBias,
  readLogprobs,
  type ToolCallRecord,
  type ToolDefinition,
} from "./chat/generation-input.js";
export {
  type PromptVocabulary,
  promptVocabularyOf,
  type RenderedPrompt,
  renderPrompt,
  resolveModelChatWrapper,
} from "./chat/prompt.js";
export { checkInChildProcess, type ValidationVerdict } from "./gguf/child-check.js";
export * from "./gguf/index.js";
export * from "./mlx/index.js";
export { sha256File } from "./sha256-file.js";
export * from "./synth/index.js";
export { choiceCompletionTokens } from "./tokenizer/completion-tokens.js";
export { FastModelTokenizer, vocabularyPieces } from "./tokenizer/fast-model-tokenizer.js";
export { ModelTokenizer } from "./tokenizer/model-tokenizer.js";
export { TokenizerPool, type TokenizerPoolOptions } from "./tokenizer/tokenizer-pool.js";
export {
  type BuiltinTokens,
  describeVocabulary,
  type VocabularyDescription,
} from "./tokenizer/vocabulary-description.js";
export {
  VOCABULARY_FILE_MAX_BYTES,
  vetVocabularyFile,
  writeVocabularyFile,
} from "./tokenizer/vocabulary-file.js";
