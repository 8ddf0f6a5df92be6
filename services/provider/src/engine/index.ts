export * from "./engine.js";
export { LlamaEngine, type LlamaEngineOptions, type LlamaEngineStats } from "./llama/llama-engine.js";
export {
  ModelValidator,
  type ModelValidatorOptions,
  sharedModelValidator,
  type ValidationVerdict,
  validateInChildProcess,
} from "./llama/model-validator.js";
export { type Detokenizer, IncrementalDetokenizer, StopMatcher } from "./llama/text.js";
