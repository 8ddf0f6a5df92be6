// MLX checkpoints: safetensors, MLX's affine quantization, the checkpoint synthesizer, and the
// vocabulary GGUF of a checkpoint's tokenizer.json.
export {
  type AffineBits,
  type AffineGroupSize,
  type AffineQuantized,
  type AffineQuantizeOptions,
  affineCodes,
  bfloat16Bits,
  bfloat16Value,
  dequantizeAffine,
  encodeFloats,
  MLX_DTYPE_SAFETENSORS,
  type MlxFloatDtype,
  quantizeAffine,
  roundToDtype,
} from "./quantize.js";
export {
  encodeSafetensorsHeader,
  parseSafetensorsHeader,
  readSafetensorsHeader,
  readSafetensorsTensor,
  SAFETENSORS_DTYPE_BYTES,
  SAFETENSORS_MAX_HEADER_BYTES,
  type SafetensorsDtype,
  SafetensorsFormatError,
  type SafetensorsHeader,
  type SafetensorsTensorInfo,
  type SafetensorsTensorSource,
  type SafetensorsWriteProgress,
  safetensorsTensorBytes,
  type WriteSafetensorsOptions,
  type WriteSafetensorsResult,
  writeSafetensorsFile,
} from "./safetensors.js";
export {
  MLX_BITS,
  MLX_WEIGHTS_FILE,
  type MlxBits,
  type MlxCheckpointFile,
  type MlxTensorPlan,
  planMlxCheckpoint,
  type SynthesizeMlxOptions,
  type SynthesizeMlxResult,
  synthesizeMlxCheckpoint,
} from "./synthesize-checkpoint.js";
export {
  type CheckpointTokenizerFiles,
  type CheckpointVocabulary,
  readCheckpointTokenizerFiles,
  TokenizerJsonError,
  vocabularyFromTokenizerJson,
  writeVocabularyFromCheckpoint,
} from "./vocabulary-from-tokenizer-json.js";
