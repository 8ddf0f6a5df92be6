export {
  GGUF_DEFAULT_ALIGNMENT,
  GgmlType,
  type GgmlTypeName,
  GgufFormatError,
  type GgufKv,
  type GgufScalar,
  type GgufScalarTypeName,
  type GgufTensorInfo,
  ggmlTensorBytes,
  ggmlTypeName,
} from "./format.js";
export { type GgufMetadata, ggufValue, type ReadGgufOptions, readGgufMetadata } from "./reader.js";
export {
  encodeGgufHeader,
  type GgufTensorSource,
  type GgufWriteProgress,
  layoutTensors,
  type WriteGgufOptions,
  type WriteGgufResult,
  writeGgufFile,
} from "./writer.js";
