export {
  encodeGgufHeader,
  GGUF_DEFAULT_ALIGNMENT,
  GgmlType,
  type GgmlTypeName,
  GgufFormatError,
  type GgufKv,
  type GgufMetadata,
  type GgufScalar,
  type GgufScalarTypeName,
  type GgufTensorInfo,
  type GgufTensorSource,
  type GgufWriteProgress,
  ggmlTensorBytes,
  ggmlTypeName,
  ggufValue,
  layoutTensors,
  type ReadGgufOptions,
  readGgufMetadata,
  type WriteGgufOptions,
  type WriteGgufResult,
  writeGgufFile,
} from "./gguf.js";
export { sha256File } from "./hash.js";
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
