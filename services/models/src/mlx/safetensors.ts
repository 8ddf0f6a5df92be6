/**
 * The safetensors format (MLX and Hugging Face checkpoints): an 8-byte little-endian header length N,
 * N bytes of JSON — {"__metadata__": {string: string}, "<tensor>": {"dtype", "shape",
 * "data_offsets": [begin, end]}, ...} — then the tensors' bytes, offsets counted from the end of the
 * header. The writer streams each tensor's bytes, so nothing model-sized is held in memory; the
 * reader checks the header as strictly as the Rust `safetensors` crate does before anything trusts
 * an offset from it (a checkpoint comes from the network).
 */
import { createHash } from "node:crypto";
import { type FileHandle, open, rename, rm } from "node:fs/promises";

/** Bytes per element of every dtype MLX reads or writes (mlx/io/safetensors.cpp). */
export const SAFETENSORS_DTYPE_BYTES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  F8_E8M0: 1,
  U16: 2,
  I16: 2,
  F16: 2,
  BF16: 2,
  U32: 4,
  I32: 4,
  F32: 4,
  U64: 8,
  I64: 8,
  F64: 8,
  C64: 8,
} as const;

export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPE_BYTES;

/** The header-length bound MLX and the Rust crate both apply. */
export const SAFETENSORS_MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = "__metadata__";
/** The data starts 8-byte aligned: the header is padded with spaces (as the Rust crate writes). */
const HEADER_ALIGNMENT = 8;

export class SafetensorsFormatError extends Error {
  override readonly name = "SafetensorsFormatError";
}

/** A tensor to write: its bytes come chunk by chunk, in order (chunks may reuse one buffer). */
export interface SafetensorsTensorSource {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
  chunks(): Iterable<Uint8Array>;
}

/** A tensor as the header lists it; offsets are from the start of the data. */
export interface SafetensorsTensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** N, the JSON's length in bytes (padding included). */
  headerBytes: number;
  /** Where the tensor data starts in the file: 8 + N. */
  dataOffset: number;
  fileSize: number;
  metadata: Record<string, string>;
  /** In the header's order. */
  tensors: SafetensorsTensorInfo[];
}

export interface SafetensorsWriteProgress {
  bytesWritten: number;
  totalBytes: number;
  /** The tensor being written, once the header is out. */
  tensor?: string;
}

export interface WriteSafetensorsOptions {
  tensors: readonly SafetensorsTensorSource[];
  metadata?: Readonly<Record<string, string>>;
  onProgress?: (progress: SafetensorsWriteProgress) => void;
  /** Bytes between progress callbacks (default 16 MiB). */
  progressIntervalBytes?: number;
}

export interface WriteSafetensorsResult {
  sizeBytes: number;
  /** Lowercase hex SHA-256 of the file, computed while writing. */
  sha256: string;
  tensors: SafetensorsTensorInfo[];
}

/** Bytes of a tensor of `dtype` and `shape`. */
export function safetensorsTensorBytes(dtype: SafetensorsDtype, shape: readonly number[]): number {
  let n = SAFETENSORS_DTYPE_BYTES[dtype];
  for (const d of shape) n *= d;
  return n;
}

/**
 * The header (length prefix, JSON, padding) of a file holding `tensors` in the given order, and
 * where each tensor's bytes go.
 */
export function encodeSafetensorsHeader(
  tensors: readonly Omit<SafetensorsTensorSource, "chunks">[],
  metadata: Readonly<Record<string, string>> = {},
): { header: Buffer; tensors: SafetensorsTensorInfo[]; dataBytes: number } {
  // No prototype: a tensor named "__proto__" is a key like any other.
  const json: Record<string, unknown> = Object.create(null);
  if (Object.keys(metadata).length > 0) json[METADATA_KEY] = { ...metadata };
  const infos: SafetensorsTensorInfo[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (t.name === "" || t.name === METADATA_KEY || Object.hasOwn(json, t.name))
      throw new SafetensorsFormatError(
        `cannot write a tensor named ${JSON.stringify(t.name)} (empty, reserved or repeated)`,
      );
    if (!Object.hasOwn(SAFETENSORS_DTYPE_BYTES, t.dtype))
      throw new SafetensorsFormatError(`tensor ${t.name}: unknown dtype ${String(t.dtype)}`);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw new SafetensorsFormatError(`tensor ${t.name}: bad shape [${t.shape.join(", ")}]`);
    const end = offset + safetensorsTensorBytes(t.dtype, t.shape);
    json[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, end] };
    infos.push({ name: t.name, dtype: t.dtype, shape: [...t.shape], begin: offset, end });
    offset = end;
  }
  const text = Buffer.from(JSON.stringify(json), "utf8");
  const padded = Math.ceil((8 + text.length) / HEADER_ALIGNMENT) * HEADER_ALIGNMENT - 8;
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  text.copy(header, 8);
  return { header, tensors: infos, dataBytes: offset };
}

/**
 * Writes a safetensors file, each tensor's chunks streamed to disk in order (hashing as it goes).
 * The file appears at `path` only when complete: it is written to `path + ".partial"` and renamed.
 */
export async function writeSafetensorsFile(
  path: string,
  options: WriteSafetensorsOptions,
): Promise<WriteSafetensorsResult> {
  const { header, tensors: infos, dataBytes } = encodeSafetensorsHeader(options.tensors, options.metadata);
  const totalBytes = header.length + dataBytes;
  const interval = options.progressIntervalBytes ?? 16 * 1024 * 1024;
  const hash = createHash("sha256");
  const partial = `${path}.partial`;
  let fh: FileHandle | undefined;
  let written = 0;
  let lastReport = 0;
  const report = (tensor?: string): void =>
    options.onProgress?.(
      tensor === undefined
        ? { bytesWritten: written, totalBytes }
        : { bytesWritten: written, totalBytes, tensor },
    );
  const put = async (bytes: Uint8Array): Promise<void> => {
    hash.update(bytes);
    for (let off = 0; off < bytes.length; ) {
      const { bytesWritten } = await fh!.write(bytes, off, bytes.length - off);
      off += bytesWritten;
    }
    written += bytes.length;
  };
  try {
    fh = await open(partial, "w");
    await put(header);
    report();
    for (let i = 0; i < options.tensors.length; i++) {
      const info = infos[i]!;
      const size = info.end - info.begin;
      let produced = 0;
      for (const chunk of options.tensors[i]!.chunks()) {
        produced += chunk.length;
        if (produced > size) throw new SafetensorsFormatError(`tensor ${info.name} produced too many bytes`);
        await put(chunk);
        if (written - lastReport >= interval) {
          lastReport = written;
          report(info.name);
        }
      }
      if (produced !== size)
        throw new SafetensorsFormatError(`tensor ${info.name} produced ${produced} bytes, expected ${size}`);
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

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/**
 * Checks a header's JSON against a file of `fileSize` bytes whose data starts at `dataOffset`:
 * known dtypes, whole non-negative shapes, each tensor's byte span equal to its dtype × shape, and
 * the spans tiling the data exactly — no gap, no overlap, nothing after the last one. The data may
 * be in any order (MLX writes it in hash-map order while its JSON keys are sorted).
 */
export function parseSafetensorsHeader(
  json: string,
  dataOffset: number,
  fileSize: number,
): Pick<SafetensorsHeader, "metadata" | "tensors"> {
  if (!json.startsWith("{")) throw new SafetensorsFormatError("the header does not start with '{'");
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (err) {
    throw new SafetensorsFormatError(`the header is not JSON (${(err as Error).message})`);
  }
  if (!isObject(parsed)) throw new SafetensorsFormatError("the header is not a JSON object");
  const metadata: Record<string, string> = {};
  const tensors: SafetensorsTensorInfo[] = [];
  for (const [name, entry] of Object.entries(parsed)) {
    if (name === METADATA_KEY) {
      if (!isObject(entry)) throw new SafetensorsFormatError("__metadata__ is not an object");
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== "string")
          throw new SafetensorsFormatError(
            `__metadata__.${k} is not a string (metadata maps strings to strings)`,
          );
        metadata[k] = v;
      }
      continue;
    }
    const at = `tensor ${JSON.stringify(name)}`;
    if (name === "") throw new SafetensorsFormatError("a tensor has an empty name");
    if (!isObject(entry)) throw new SafetensorsFormatError(`${at} is not an object`);
    for (const key of Object.keys(entry)) {
      if (key !== "dtype" && key !== "shape" && key !== "data_offsets")
        throw new SafetensorsFormatError(`${at} has an unknown field ${JSON.stringify(key)}`);
    }
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== "string" || !Object.hasOwn(SAFETENSORS_DTYPE_BYTES, dtype))
      throw new SafetensorsFormatError(`${at} has an unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isCount))
      throw new SafetensorsFormatError(`${at} has a shape that is not a list of whole numbers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount))
      throw new SafetensorsFormatError(`${at} has data_offsets that are not two whole numbers`);
    const [begin, end] = offsets as [number, number];
    if (end < begin) throw new SafetensorsFormatError(`${at} ends (${end}) before it begins (${begin})`);
    let bytes = SAFETENSORS_DTYPE_BYTES[dtype as SafetensorsDtype];
    for (const d of shape as number[]) {
      bytes *= d;
      if (!Number.isSafeInteger(bytes)) throw new SafetensorsFormatError(`${at} has an implausible shape`);
    }
    if (end - begin !== bytes) {
      throw new SafetensorsFormatError(
        `${at}: ${dtype} [${shape.join(", ")}] is ${bytes} bytes but its data_offsets span ${end - begin}`,
      );
    }
    tensors.push({ name, dtype: dtype as SafetensorsDtype, shape: shape as number[], begin, end });
  }
  const byOffset = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let next = 0;
  for (const t of byOffset) {
    if (t.begin !== next) {
      throw new SafetensorsFormatError(
        `tensor ${JSON.stringify(t.name)} starts at ${t.begin}, expected ${next} (tensors must tile the data with no gap or overlap)`,
      );
    }
    next = t.end;
  }
  const dataBytes = fileSize - dataOffset;
  if (next > dataBytes)
    throw new SafetensorsFormatError(
      `the tensors need ${next} bytes of data but the file has ${dataBytes}: truncated?`,
    );
  if (next < dataBytes)
    throw new SafetensorsFormatError(`the file has ${dataBytes - next} bytes after the last tensor`);
  return { metadata, tensors };
}

/** Reads and checks the header of the safetensors file at `path` (nothing of the data). */
export async function readSafetensorsHeader(
  path: string,
  maxHeaderBytes = SAFETENSORS_MAX_HEADER_BYTES,
): Promise<SafetensorsHeader> {
  const fh = await open(path, "r");
  try {
    const fileSize = (await fh.stat()).size;
    if (fileSize < 8)
      throw new SafetensorsFormatError(`the file is ${fileSize} bytes, too short for a header`);
    const prefix = Buffer.alloc(8);
    await readFully(fh, prefix, 0);
    const length = prefix.readBigUInt64LE(0);
    if (length === 0n) throw new SafetensorsFormatError("the header length is 0");
    if (length > BigInt(maxHeaderBytes))
      throw new SafetensorsFormatError(
        `the header length ${length} is over the ${maxHeaderBytes}-byte limit`,
      );
    const headerBytes = Number(length);
    if (8 + headerBytes > fileSize) {
      throw new SafetensorsFormatError(
        `the header is ${headerBytes} bytes but the file is ${fileSize}: truncated?`,
      );
    }
    const raw = Buffer.alloc(headerBytes);
    await readFully(fh, raw, 8);
    let json: string;
    try {
      json = new TextDecoder("utf-8", { fatal: true }).decode(raw);
    } catch {
      throw new SafetensorsFormatError("the header is not UTF-8");
    }
    const dataOffset = 8 + headerBytes;
    return { headerBytes, dataOffset, fileSize, ...parseSafetensorsHeader(json, dataOffset, fileSize) };
  } catch (err) {
    if (err instanceof SafetensorsFormatError) err.message = `${path}: ${err.message}`;
    throw err;
  } finally {
    await fh.close();
  }
}

/** The bytes of one tensor of a file whose header was read with readSafetensorsHeader. */
export async function readSafetensorsTensor(
  path: string,
  header: SafetensorsHeader,
  name: string,
): Promise<Buffer> {
  const info = header.tensors.find((t) => t.name === name);
  if (!info) throw new SafetensorsFormatError(`${path}: no tensor ${JSON.stringify(name)}`);
  const fh = await open(path, "r");
  try {
    const out = Buffer.alloc(info.end - info.begin);
    await readFully(fh, out, header.dataOffset + info.begin);
    return out;
  } finally {
    await fh.close();
  }
}

async function readFully(fh: FileHandle, out: Buffer, position: number): Promise<void> {
  for (let done = 0; done < out.length; ) {
    const { bytesRead } = await fh.read(out, done, out.length - done, position + done);
    if (bytesRead === 0) throw new SafetensorsFormatError("the file ended early");
    done += bytesRead;
  }
}
