/**
 * GGUF v3, the format both the writer (writer.ts) and the never-trusting reader (reader.ts) follow.
 *
 * Layout: magic "GGUF", u32 version, u64 tensor count, u64 KV count, the KVs (key string, u32 value
 * type, value), the tensor infos (name, u32 n_dims, u64 dims (ne0 first: the row length), u32 ggml
 * type, u64 offset relative to the data section), padding to `general.alignment` (default 32), then
 * the tensor data, each tensor starting at an aligned offset. Everything is little-endian; strings are
 * a u64 byte length followed by UTF-8 bytes.
 */
export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** GGUF metadata value types (the u32 on the wire). */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

export type GgufScalarTypeName =
  | "u8"
  | "i8"
  | "u16"
  | "i16"
  | "u32"
  | "i32"
  | "f32"
  | "bool"
  | "string"
  | "u64"
  | "i64"
  | "f64";

export const SCALAR_TYPE_CODES: Record<GgufScalarTypeName, number> = {
  u8: GgufValueType.UINT8,
  i8: GgufValueType.INT8,
  u16: GgufValueType.UINT16,
  i16: GgufValueType.INT16,
  u32: GgufValueType.UINT32,
  i32: GgufValueType.INT32,
  f32: GgufValueType.FLOAT32,
  bool: GgufValueType.BOOL,
  string: GgufValueType.STRING,
  u64: GgufValueType.UINT64,
  i64: GgufValueType.INT64,
  f64: GgufValueType.FLOAT64,
};
export const SCALAR_TYPE_NAMES = new Map<number, GgufScalarTypeName>(
  Object.entries(SCALAR_TYPE_CODES).map(([name, code]) => [code, name as GgufScalarTypeName]),
);

export type GgufScalar = number | bigint | boolean | string;

/**
 * One typed metadata entry. 64-bit integers read back as bigint; when writing, number or bigint.
 * Arrays hold scalars of one type (nested arrays are valid GGUF but unused by llama.cpp models).
 */
export type GgufKv =
  | { key: string; type: "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "f32" | "f64"; value: number }
  | { key: string; type: "u64" | "i64"; value: bigint | number }
  | { key: string; type: "bool"; value: boolean }
  | { key: string; type: "string"; value: string }
  | { key: string; type: "array"; itemType: GgufScalarTypeName; value: readonly GgufScalar[] };

/** ggml tensor types this module can size (the u32 in a tensor info). */
export const GgmlType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q8_1: 9,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  Q8_K: 15,
  I8: 24,
  I16: 25,
  I32: 26,
  I64: 27,
  F64: 28,
  BF16: 30,
} as const;
export type GgmlTypeName = keyof typeof GgmlType;

/** [elements per block, bytes per block] for each known type. */
const GGML_BLOCK: Record<number, [number, number]> = {
  [GgmlType.F32]: [1, 4],
  [GgmlType.F16]: [1, 2],
  [GgmlType.Q4_0]: [32, 18],
  [GgmlType.Q4_1]: [32, 20],
  [GgmlType.Q5_0]: [32, 22],
  [GgmlType.Q5_1]: [32, 24],
  [GgmlType.Q8_0]: [32, 34],
  [GgmlType.Q8_1]: [32, 36],
  [GgmlType.Q2_K]: [256, 84],
  [GgmlType.Q3_K]: [256, 110],
  [GgmlType.Q4_K]: [256, 144],
  [GgmlType.Q5_K]: [256, 176],
  [GgmlType.Q6_K]: [256, 210],
  [GgmlType.Q8_K]: [256, 292],
  [GgmlType.I8]: [1, 1],
  [GgmlType.I16]: [1, 2],
  [GgmlType.I32]: [1, 4],
  [GgmlType.I64]: [1, 8],
  [GgmlType.F64]: [1, 8],
  [GgmlType.BF16]: [1, 2],
};

const GGML_TYPE_NAMES = new Map<number, GgmlTypeName>(
  Object.entries(GgmlType).map(([name, code]) => [code, name as GgmlTypeName]),
);

export function ggmlTypeName(type: number): string {
  return GGML_TYPE_NAMES.get(type) ?? `type${type}`;
}

export function ggmlBlockSize(type: number): number {
  const block = GGML_BLOCK[type];
  if (block === undefined) throw new GgufFormatError(`unknown ggml type ${type}`);
  return block[0];
}

/** Bytes a tensor of this type and shape occupies; throws when ne0 is not a whole number of blocks. */
export function ggmlTensorBytes(type: number, dims: readonly number[]): number {
  const block = GGML_BLOCK[type];
  if (block === undefined) throw new GgufFormatError(`unknown ggml type ${type}`);
  const [elements, bytes] = block;
  const ne0 = dims[0] ?? 1;
  if (ne0 % elements !== 0) {
    throw new GgufFormatError(
      `ggml type ${ggmlTypeName(type)} needs rows divisible by ${elements}, got ${ne0}`,
    );
  }
  let rows = 1;
  for (let i = 1; i < dims.length; i++) rows *= dims[i]!;
  return (ne0 / elements) * bytes * rows;
}

/** Raised for anything malformed in a GGUF file (or a request to write one). */
export class GgufFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GgufFormatError";
  }
}

export function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

/** A tensor's place in the data section, as written and as read. */
export interface GgufTensorInfo {
  name: string;
  dims: number[];
  type: number;
  /** Offset from the start of the data section. */
  offset: number;
  sizeBytes: number;
}
