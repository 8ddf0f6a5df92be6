/**
 * Writes GGUF files: the synthesizer (models/synth) streams each tensor's bytes straight to disk, so
 * nothing model-sized is held in memory.
 */
import { createHash } from "node:crypto";
import { type FileHandle, open, rename, rm } from "node:fs/promises";
import {
  alignUp,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VERSION,
  GgufFormatError,
  type GgufKv,
  type GgufScalar,
  type GgufScalarTypeName,
  type GgufTensorInfo,
  GgufValueType,
  ggmlTensorBytes,
  SCALAR_TYPE_CODES,
} from "./format.js";

/** A tensor to write: its info, and its bytes produced chunk by chunk (so nothing large is held). */
export interface GgufTensorSource {
  name: string;
  /** ne0 first (the row length), as GGUF stores them. */
  dims: readonly number[];
  type: number;
  /** Yields the tensor's bytes in order; the total must equal ggmlTensorBytes(type, dims). Chunks may reuse one buffer. */
  chunks(): Iterable<Uint8Array>;
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
