export * from "./engine.js";
export { FormatRouterEngine } from "./format-router.js";
export { LlamaEngine, type LlamaEngineOptions, type LlamaEngineStats } from "./llama/llama-engine.js";
export {
  ModelValidator,
  type ModelValidatorOptions,
  sharedModelValidator,
  type ValidationVerdict,
  validateInChildProcess,
} from "./llama/model-validator.js";
export { MlxEngine, type MlxEngineOptions, type MlxEngineStats } from "./mlx/mlx-engine.js";
export { MlxCheckpointValidator, sharedMlxValidator } from "./mlx/mlx-validator.js";
export { NativeEngine, type NativeEngineOptions, type NativeEngineStats } from "./native/native-engine.js";
export { type Detokenizer, IncrementalDetokenizer, StopMatcher } from "./text.js";
