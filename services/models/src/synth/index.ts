// The model synthesizer; the GGUF format it writes is in models/gguf.
export { float16Bits, float16Value, fnv1a32, Xoshiro128 } from "./random.js";
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
  LLAMA3_TEMPLATE,
  TokenType,
} from "./tokenizer.js";
