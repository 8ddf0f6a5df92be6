/**
 * Reads a GGUF file's header, metadata and tensor infos without trusting any of it: every length and
 * count is bounded by the file size before anything is allocated. The inventory, models download and
 * the engine's model validator read files a stranger may have supplied.
 */
import { type FileHandle, open } from "node:fs/promises";
import {
  alignUp,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GgufFormatError,
  type GgufKv,
  type GgufScalar,
  type GgufScalarTypeName,
  type GgufTensorInfo,
  GgufValueType,
  ggmlTensorBytes,
  ggmlTypeName,
  SCALAR_TYPE_NAMES,
} from "./format.js";

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
