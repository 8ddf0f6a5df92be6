/**
 * GGUF v3: a streaming writer and a bounded, never-trusting metadata reader.
 *
 * Layout: magic "GGUF", u32 version, u64 tensor count, u64 KV count, the KVs (key string, u32 value
 * type, value), the tensor infos (name, u32 n_dims, u64 dims (ne0 first: the row length), u32 ggml
 * type, u64 offset relative to the data section), padding to `general.alignment` (default 32), then
 * the tensor data, each tensor starting at an aligned offset. Everything is little-endian; strings are
 * a u64 byte length followed by UTF-8 bytes.
 */
import { createHash } from "node:crypto";
import { type FileHandle, open, rename, rm } from "node:fs/promises";

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

const SCALAR_TYPE_CODES: Record<GgufScalarTypeName, number> = {
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
const SCALAR_TYPE_NAMES = new Map<number, GgufScalarTypeName>(
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

// ---------------------------------------------------------------------------------------------
// Writing

/** A tensor to write: its info, and its bytes produced chunk by chunk (so nothing large is held). */
export interface GgufTensorSource {
  name: string;
  /** ne0 first (the row length), as GGUF stores them. */
  dims: readonly number[];
  type: number;
  /** Yields the tensor's bytes in order; the total must equal ggmlTensorBytes(type, dims). Chunks may reuse one buffer. */
  chunks(): Iterable<Uint8Array>;
}

export interface GgufTensorInfo {
  name: string;
  dims: number[];
  type: number;
  /** Offset from the start of the data section. */
  offset: number;
  sizeBytes: number;
}

export interface GgufWriteProgress {
  bytesWritten: number;
  totalBytes: number;
  /** The tensor being written, once the header is out. */
  tensor?: string;
}

class ByteSink {
  private buf = Buffer.allocUnsafe(1 << 16);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u8(v: number): void {
    this.reserve(1);
    this.buf.writeUInt8(v, this.length);
    this.length += 1;
  }
  i8(v: number): void {
    this.reserve(1);
    this.buf.writeInt8(v, this.length);
    this.length += 1;
  }
  u16(v: number): void {
    this.reserve(2);
    this.buf.writeUInt16LE(v, this.length);
    this.length += 2;
  }
  i16(v: number): void {
    this.reserve(2);
    this.buf.writeInt16LE(v, this.length);
    this.length += 2;
  }
  u32(v: number): void {
    this.reserve(4);
    this.buf.writeUInt32LE(v, this.length);
    this.length += 4;
  }
  i32(v: number): void {
    this.reserve(4);
    this.buf.writeInt32LE(v, this.length);
    this.length += 4;
  }
  f32(v: number): void {
    this.reserve(4);
    this.buf.writeFloatLE(v, this.length);
    this.length += 4;
  }
  f64(v: number): void {
    this.reserve(8);
    this.buf.writeDoubleLE(v, this.length);
    this.length += 8;
  }
  u64(v: bigint | number): void {
    this.reserve(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  i64(v: bigint | number): void {
    this.reserve(8);
    this.buf.writeBigInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  str(s: string): void {
    const bytes = Buffer.from(s, "utf8");
    this.u64(bytes.length);
    this.reserve(bytes.length);
    bytes.copy(this.buf, this.length);
    this.length += bytes.length;
  }
  zeros(n: number): void {
    this.reserve(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function writeScalar(sink: ByteSink, type: GgufScalarTypeName, value: GgufScalar, key: string): void {
  const bad = (): never => {
    throw new GgufFormatError(`metadata ${key}: ${String(value)} is not a valid ${type}`);
  };
  switch (type) {
    case "string":
      if (typeof value !== "string") bad();
      sink.str(value as string);
      return;
    case "bool":
      if (typeof value !== "boolean") bad();
      sink.u8(value ? 1 : 0);
      return;
    case "u64":
    case "i64":
      if (typeof value !== "bigint" && typeof value !== "number") bad();
      if (type === "u64") sink.u64(value as bigint | number);
      else sink.i64(value as bigint | number);
      return;
    default: {
      if (typeof value !== "number") bad();
      const v = value as number;
      if (type === "f32") sink.f32(v);
      else if (type === "f64") sink.f64(v);
      else if (type === "u8") sink.u8(v);
      else if (type === "i8") sink.i8(v);
      else if (type === "u16") sink.u16(v);
      else if (type === "i16") sink.i16(v);
      else if (type === "u32") sink.u32(v);
      else sink.i32(v);
    }
  }
}

/** Lays out tensor offsets (aligned) and returns the infos plus the data section's size. */
export function layoutTensors(
  tensors: readonly Pick<GgufTensorSource, "name" | "dims" | "type">[],
  alignment = GGUF_DEFAULT_ALIGNMENT,
): { infos: GgufTensorInfo[]; dataBytes: number } {
  const infos: GgufTensorInfo[] = [];
  const names = new Set<string>();
  let offset = 0;
  for (const t of tensors) {
    if (names.has(t.name)) throw new GgufFormatError(`duplicate tensor name ${t.name}`);
    names.add(t.name);
    offset = alignUp(offset, alignment);
    const sizeBytes = ggmlTensorBytes(t.type, t.dims);
    infos.push({ name: t.name, dims: [...t.dims], type: t.type, offset, sizeBytes });
    offset += sizeBytes;
  }
  return { infos, dataBytes: offset };
}

/** Encodes everything before the data section, padded to the alignment. */
export function encodeGgufHeader(
  kv: readonly GgufKv[],
  tensors: readonly GgufTensorInfo[],
  alignment = GGUF_DEFAULT_ALIGNMENT,
): Buffer {
  const sink = new ByteSink();
  sink.u32(GGUF_MAGIC);
  sink.u32(GGUF_VERSION);
  sink.u64(tensors.length);
  sink.u64(kv.length);
  const keys = new Set<string>();
  for (const entry of kv) {
    if (keys.has(entry.key)) throw new GgufFormatError(`duplicate metadata key ${entry.key}`);
    keys.add(entry.key);
    sink.str(entry.key);
    if (entry.type === "array") {
      sink.u32(GgufValueType.ARRAY);
      sink.u32(SCALAR_TYPE_CODES[entry.itemType]);
      sink.u64(entry.value.length);
      for (const item of entry.value) writeScalar(sink, entry.itemType, item, entry.key);
    } else {
      sink.u32(SCALAR_TYPE_CODES[entry.type]);
      writeScalar(sink, entry.type, entry.value, entry.key);
    }
  }
  for (const t of tensors) {
    sink.str(t.name);
    sink.u32(t.dims.length);
    for (const d of t.dims) sink.u64(d);
    sink.u32(t.type);
    sink.u64(t.offset);
  }
  sink.zeros(alignUp(sink.length, alignment) - sink.length);
  return Buffer.from(sink.bytes());
}

export interface WriteGgufOptions {
  kv: readonly GgufKv[];
  tensors: readonly GgufTensorSource[];
  alignment?: number;
  onProgress?: (progress: GgufWriteProgress) => void;
  /** Bytes between progress callbacks (default 16 MiB). */
  progressIntervalBytes?: number;
}

export interface WriteGgufResult {
  sizeBytes: number;
  /** Lowercase hex SHA-256 of the file, computed while writing. */
  sha256: string;
  tensors: GgufTensorInfo[];
}

/**
 * Writes a GGUF file by streaming each tensor's chunks to disk (hashing as it goes). The file appears
 * at `path` only when complete: it is written to `path + ".partial"` and renamed.
 */
export async function writeGgufFile(path: string, options: WriteGgufOptions): Promise<WriteGgufResult> {
  const alignment = options.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  const kv = options.kv.some((e) => e.key === "general.alignment")
    ? options.kv
    : alignment === GGUF_DEFAULT_ALIGNMENT
      ? options.kv
      : [...options.kv, { key: "general.alignment", type: "u32", value: alignment } as GgufKv];
  const { infos, dataBytes } = layoutTensors(options.tensors, alignment);
  const header = encodeGgufHeader(kv, infos, alignment);
  const totalBytes = header.length + dataBytes;
  const interval = options.progressIntervalBytes ?? 16 * 1024 * 1024;
  const hash = createHash("sha256");
  const partial = `${path}.partial`;
  let fh: FileHandle | undefined;
  let written = 0;
  let lastReport = 0;
  const report = (tensor?: string): void => {
    if (!options.onProgress) return;
    options.onProgress(
      tensor === undefined
        ? { bytesWritten: written, totalBytes }
        : { bytesWritten: written, totalBytes, tensor },
    );
  };
  const put = async (bytes: Uint8Array): Promise<void> => {
    hash.update(bytes);
    let off = 0;
    while (off < bytes.length) {
      const { bytesWritten } = await fh!.write(bytes, off, bytes.length - off);
      off += bytesWritten;
    }
    written += bytes.length;
  };
  try {
    fh = await open(partial, "w");
    await put(header);
    report();
    const zeros = Buffer.alloc(alignment);
    let dataOffset = 0;
    for (let i = 0; i < options.tensors.length; i++) {
      const source = options.tensors[i]!;
      const info = infos[i]!;
      if (info.offset > dataOffset) {
        await put(zeros.subarray(0, info.offset - dataOffset));
        dataOffset = info.offset;
      }
      let produced = 0;
      for (const chunk of source.chunks()) {
        produced += chunk.length;
        if (produced > info.sizeBytes)
          throw new GgufFormatError(`tensor ${info.name} produced too many bytes`);
        await put(chunk);
        if (written - lastReport >= interval) {
          lastReport = written;
          report(info.name);
        }
      }
      if (produced !== info.sizeBytes) {
        throw new GgufFormatError(
          `tensor ${info.name} produced ${produced} bytes, expected ${info.sizeBytes}`,
        );
      }
      dataOffset += produced;
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(partial, path);
    report();
    return { sizeBytes: written, sha256: hash.digest("hex"), tensors: infos };
  } catch (err) {
    await fh?.close().catch(() => {});
    await rm(partial, { force: true }).catch(() => {});
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

export interface GgufMetadata {
  version: number;
  /** Every KV in file order, typed as written. */
  kv: GgufKv[];
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Absolute file offset of the data section. */
  dataOffset: number;
  fileSize: number;
  /** Convenience views. */
  architecture: string;
  /** `<arch>.context_length`, 0 when absent. */
  contextLength: number;
  /** e.g. "Q8_0": from general.file_type, or the most common type among 2-D tensors. */
  quantization: string;
  /** Sum of elements over all tensors. */
  parameterCount: number;
}

export interface ReadGgufOptions {
  /** Upper bound on any single string (default 64 MiB) and array (default 16M items). */
  maxStringBytes?: number;
  maxArrayItems?: number;
}

/** Pulls bytes from a file handle on demand, never trusting a length field beyond the file size. */
class FileReader {
  private buf = Buffer.alloc(0);
  private bufStart = 0; // file offset of buf[0]
  pos = 0;

  constructor(
    private readonly fh: FileHandle,
    readonly size: number,
  ) {}

  private async ensure(n: number): Promise<Buffer> {
    if (n < 0 || this.pos + n > this.size) {
      throw new GgufFormatError(
        `unexpected end of file at offset ${this.pos} (wanted ${n} bytes, file has ${this.size})`,
      );
    }
    const relStart = this.pos - this.bufStart;
    if (relStart + n <= this.buf.length) return this.buf;
    const want = Math.max(n, 1 << 20);
    const length = Math.min(want, this.size - this.pos);
    const next = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await this.fh.read(next, got, length - got, this.pos + got);
      if (bytesRead === 0) throw new GgufFormatError(`file shrank while reading at offset ${this.pos + got}`);
      got += bytesRead;
    }
    this.buf = next;
    this.bufStart = this.pos;
    return this.buf;
  }

  async u8(): Promise<number> {
    const b = await this.ensure(1);
    const v = b.readUInt8(this.pos - this.bufStart);
    this.pos += 1;
    return v;
  }
  async i8(): Promise<number> {
    const b = await this.ensure(1);
    const v = b.readInt8(this.pos - this.bufStart);
    this.pos += 1;
    return v;
  }
  async u16(): Promise<number> {
    const b = await this.ensure(2);
    const v = b.readUInt16LE(this.pos - this.bufStart);
    this.pos += 2;
    return v;
  }
  async i16(): Promise<number> {
    const b = await this.ensure(2);
    const v = b.readInt16LE(this.pos - this.bufStart);
    this.pos += 2;
    return v;
  }
  async u32(): Promise<number> {
    const b = await this.ensure(4);
    const v = b.readUInt32LE(this.pos - this.bufStart);
    this.pos += 4;
    return v;
  }
  async i32(): Promise<number> {
    const b = await this.ensure(4);
    const v = b.readInt32LE(this.pos - this.bufStart);
    this.pos += 4;
    return v;
  }
  async f32(): Promise<number> {
    const b = await this.ensure(4);
    const v = b.readFloatLE(this.pos - this.bufStart);
    this.pos += 4;
    return v;
  }
  async f64(): Promise<number> {
    const b = await this.ensure(8);
    const v = b.readDoubleLE(this.pos - this.bufStart);
    this.pos += 8;
    return v;
  }
  async u64(): Promise<bigint> {
    const b = await this.ensure(8);
    const v = b.readBigUInt64LE(this.pos - this.bufStart);
    this.pos += 8;
    return v;
  }
  async i64(): Promise<bigint> {
    const b = await this.ensure(8);
    const v = b.readBigInt64LE(this.pos - this.bufStart);
    this.pos += 8;
    return v;
  }
  /** A u64 that must fit a JS number and stay under `max`. */
  async count(what: string, max: number): Promise<number> {
    const v = await this.u64();
    if (v > BigInt(Math.floor(max))) throw new GgufFormatError(`${what} ${v} is implausible (limit ${max})`);
    return Number(v);
  }
  async str(maxBytes: number): Promise<string> {
    const len = await this.count("string length", Math.min(maxBytes, this.size));
    const b = await this.ensure(len);
    const rel = this.pos - this.bufStart;
    const s = b.toString("utf8", rel, rel + len);
    this.pos += len;
    return s;
  }
}

async function readScalar(
  r: FileReader,
  type: GgufScalarTypeName,
  maxStringBytes: number,
): Promise<GgufScalar> {
  switch (type) {
    case "u8":
      return r.u8();
    case "i8":
      return r.i8();
    case "u16":
      return r.u16();
    case "i16":
      return r.i16();
    case "u32":
      return r.u32();
    case "i32":
      return r.i32();
    case "f32":
      return r.f32();
    case "f64":
      return r.f64();
    case "u64":
      return r.u64();
    case "i64":
      return r.i64();
    case "bool": {
      const v = await r.u8();
      if (v > 1) throw new GgufFormatError(`invalid bool value ${v}`);
      return v === 1;
    }
    case "string":
      return r.str(maxStringBytes);
  }
}

/** Values for llama.cpp's general.file_type (LLAMA_FTYPE_*). */
export const LlamaFileType: Record<number, string> = {
  0: "F32",
  1: "F16",
  2: "Q4_0",
  3: "Q4_1",
  7: "Q8_0",
  8: "Q5_0",
  9: "Q5_1",
  10: "Q2_K",
  11: "Q3_K_S",
  12: "Q3_K_M",
  13: "Q3_K_L",
  14: "Q4_K_S",
  15: "Q4_K_M",
  16: "Q5_K_S",
  17: "Q5_K_M",
  18: "Q6_K",
  32: "BF16",
};

/**
 * Reads the header, metadata and tensor infos of a GGUF file without touching tensor data, and checks
 * that every tensor lies inside the file. Throws GgufFormatError for anything malformed or truncated.
 */
export async function readGgufMetadata(path: string, options: ReadGgufOptions = {}): Promise<GgufMetadata> {
  const maxStringBytes = options.maxStringBytes ?? 64 * 1024 * 1024;
  const maxArrayItems = options.maxArrayItems ?? 16 * 1024 * 1024;
  const fh = await open(path, "r");
  try {
    const { size } = await fh.stat();
    const r = new FileReader(fh, size);
    if (size < 24) throw new GgufFormatError(`file is too small to be GGUF (${size} bytes)`);
    const magic = await r.u32();
    if (magic !== GGUF_MAGIC) throw new GgufFormatError("not a GGUF file (bad magic)");
    const version = await r.u32();
    if (version !== 2 && version !== 3) throw new GgufFormatError(`unsupported GGUF version ${version}`);
    // Each tensor info and KV takes at least 8 bytes, so their counts are bounded by the file size.
    const tensorCount = await r.count("tensor count", size / 8);
    const kvCount = await r.count("metadata count", size / 8);
    const kv: GgufKv[] = [];
    for (let i = 0; i < kvCount; i++) {
      const key = await r.str(65536);
      const typeCode = await r.u32();
      if (typeCode === GgufValueType.ARRAY) {
        const itemCode = await r.u32();
        const itemType = SCALAR_TYPE_NAMES.get(itemCode);
        if (itemType === undefined)
          throw new GgufFormatError(`metadata ${key}: unsupported array item type ${itemCode}`);
        const n = await r.count(`metadata ${key} array length`, Math.min(maxArrayItems, size));
        const value: GgufScalar[] = new Array(n);
        for (let j = 0; j < n; j++) value[j] = await readScalar(r, itemType, maxStringBytes);
        kv.push({ key, type: "array", itemType, value });
      } else {
        const type = SCALAR_TYPE_NAMES.get(typeCode);
        if (type === undefined) throw new GgufFormatError(`metadata ${key}: unknown value type ${typeCode}`);
        const value = await readScalar(r, type, maxStringBytes);
        kv.push({ key, type, value } as GgufKv);
      }
    }
    const get = (key: string): GgufScalar | undefined => {
      const e = kv.find((x) => x.key === key);
      return e === undefined || e.type === "array" ? undefined : e.value;
    };
    const alignmentValue = get("general.alignment");
    const alignment = alignmentValue === undefined ? GGUF_DEFAULT_ALIGNMENT : Number(alignmentValue);
    if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0) {
      throw new GgufFormatError(`invalid general.alignment ${String(alignmentValue)}`);
    }
    const rawTensors: { name: string; dims: number[]; type: number; offset: number }[] = [];
    for (let i = 0; i < tensorCount; i++) {
      const name = await r.str(65536);
      const nDims = await r.u32();
      if (nDims < 1 || nDims > 4)
        throw new GgufFormatError(`tensor ${name}: invalid dimension count ${nDims}`);
      const dims: number[] = [];
      for (let d = 0; d < nDims; d++) {
        const dim = await r.count(`tensor ${name} dimension`, Number.MAX_SAFE_INTEGER);
        if (dim < 1) throw new GgufFormatError(`tensor ${name}: zero dimension`);
        dims.push(dim);
      }
      const type = await r.u32();
      const offset = await r.count(`tensor ${name} offset`, size);
      if (offset % alignment !== 0)
        throw new GgufFormatError(`tensor ${name}: offset ${offset} is not aligned`);
      rawTensors.push({ name, dims, type, offset });
    }
    const dataOffset = alignUp(r.pos, alignment);
    const tensors: GgufTensorInfo[] = [];
    let parameterCount = 0;
    const names = new Set<string>();
    for (const t of rawTensors) {
      if (names.has(t.name)) throw new GgufFormatError(`duplicate tensor ${t.name}`);
      names.add(t.name);
      const sizeBytes = ggmlTensorBytes(t.type, t.dims);
      if (dataOffset + t.offset + sizeBytes > size) {
        throw new GgufFormatError(
          `tensor ${t.name} ends at ${dataOffset + t.offset + sizeBytes} but the file has ${size} bytes (truncated?)`,
        );
      }
      parameterCount += t.dims.reduce((a, b) => a * b, 1);
      tensors.push({ ...t, sizeBytes });
    }
    const architecture = String(get("general.architecture") ?? "");
    const ctx = get(`${architecture}.context_length`);
    const fileType = get("general.file_type");
    let quantization = fileType === undefined ? undefined : LlamaFileType[Number(fileType)];
    if (quantization === undefined) {
      const counts = new Map<number, number>();
      for (const t of tensors) {
        if (t.dims.length >= 2) counts.set(t.type, (counts.get(t.type) ?? 0) + t.sizeBytes);
      }
      let best = -1;
      let bestBytes = -1;
      for (const [type, bytes] of counts) {
        if (bytes > bestBytes) {
          best = type;
          bestBytes = bytes;
        }
      }
      quantization = best < 0 ? "unknown" : ggmlTypeName(best);
    }
    return {
      version,
      kv,
      tensors,
      alignment,
      dataOffset,
      fileSize: size,
      architecture,
      contextLength: ctx === undefined ? 0 : Number(ctx),
      quantization,
      parameterCount,
    };
  } finally {
    await fh.close();
  }
}

/** The value of one metadata key (undefined when absent). */
export function ggufValue(
  meta: Pick<GgufMetadata, "kv">,
  key: string,
): GgufScalar | readonly GgufScalar[] | undefined {
  return meta.kv.find((e) => e.key === key)?.value;
}
