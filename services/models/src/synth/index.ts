// The model synthesizer; the GGUF format it writes is in models/gguf.
export {
  type ArchitectureParams,
  architectureKv,
  type GgufBpeTokenizer,
  tokenizerKv,
} from "./metadata.js";
export {
  float16Bits,
  float16Value,
  fnv1a32,
  INT8_STD,
  int8WeightValues,
  tensorStream,
  Xoshiro128,
} from "./random.js";
export { isModelShapeName, MODEL_SHAPES, type ModelShape, type ModelShapeName } from "./shapes.js";
export {
  type ModelPlan,
  planModel,
  resolveShape,
  SYNTH_QUANTIZATIONS,
  type SynthesizeOptions,
  type SynthesizeResult,
  type SynthQuantization,
  synthesizeModel,
} from "./synthesize.js";
export {
  buildBpeVocab,
  buildTokenizer,
  bytesToUnicode,
  CHATML_TEMPLATE,
  embeddingTokenizer,
  LLAMA3_TEMPLATE,
  type TokenizerFamily,
  type TokenizerSpec,
  TokenType,
} from "./tokenizer.js";
