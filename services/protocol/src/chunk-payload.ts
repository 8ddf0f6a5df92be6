import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type ChunkPayload,
  ChunkPayloadSchema,
  type TokenLogprob,
} from "./gen/darkbloom/provider/v1/provider_pb.js";

/**
 * The protobuf encoding of ChunkPayload (text = 1, token_count = 2, choice_index = 3, embedding = 4),
 * written and read by hand: every token of every response is sealed by the provider and opened by the
 * coordinator as one of these, and the reflective codec costs more than the cipher. The output is
 * what toBinary(ChunkPayloadSchema, …) writes (fields in order, zero values omitted); the reader
 * accepts any valid encoding (any field order, repeated fields, unknown fields skipped), as
 * fromBinary does. Tested against both. An embedding (one chunk per input of an embeddings request)
 * is written by encodeEmbeddingChunkPayload. A chunk with log-probabilities (field 5, only for the
 * requests that ask for them) is written and read by the generated codec.
 */

/** Thrown for bytes that are not a ChunkPayload encoding. */
export class ChunkPayloadError extends Error {
  override readonly name = "ChunkPayloadError";
}

export function encodeChunkPayload(text: string, tokenCount: number, choiceIndex: number): Buffer {
  const textBytes = text === "" ? 0 : Buffer.byteLength(text, "utf8");
  const size =
    (textBytes > 0 ? 1 + varintSize(textBytes) + textBytes : 0) +
    (tokenCount !== 0 ? 1 + varintSize(tokenCount >>> 0) : 0) +
    (choiceIndex !== 0 ? 1 + varintSize(choiceIndex >>> 0) : 0);
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  if (textBytes > 0) {
    out[at++] = 0x0a;
    at = writeVarint(out, at, textBytes);
    at += out.write(text, at, "utf8");
  }
  if (tokenCount !== 0) {
    out[at++] = 0x10;
    at = writeVarint(out, at, tokenCount >>> 0);
  }
  if (choiceIndex !== 0) {
    out[at++] = 0x18;
    at = writeVarint(out, at, choiceIndex >>> 0);
  }
  return out;
}

/** A ChunkPayload carrying one input's embedding (index, binary32 values) and its token count. */
export function encodeEmbeddingChunkPayload(index: number, values: Uint8Array, tokenCount: number): Buffer {
  const embedding =
    (index !== 0 ? 1 + varintSize(index >>> 0) : 0) +
    (values.byteLength > 0 ? 1 + varintSize(values.byteLength) + values.byteLength : 0);
  const size =
    (tokenCount !== 0 ? 1 + varintSize(tokenCount >>> 0) : 0) + 1 + varintSize(embedding) + embedding;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  if (tokenCount !== 0) {
    out[at++] = 0x10;
    at = writeVarint(out, at, tokenCount >>> 0);
  }
  out[at++] = 0x22;
  at = writeVarint(out, at, embedding);
  if (index !== 0) {
    out[at++] = 0x08;
    at = writeVarint(out, at, index >>> 0);
  }
  if (values.byteLength > 0) {
    out[at++] = 0x12;
    at = writeVarint(out, at, values.byteLength);
    out.set(values, at);
  }
  return out;
}

/**
 * A text chunk with its tokens' log-probabilities. Only requests that ask for them have these, and
 * each token's entry outweighs its text many times over, so the generated codec's cost is not what
 * bounds them.
 */
export function encodeLogprobsChunkPayload(
  text: string,
  tokenCount: number,
  choiceIndex: number,
  logprobs: TokenLogprob[],
): Uint8Array {
  return toBinary(
    ChunkPayloadSchema,
    create(ChunkPayloadSchema, { text, tokenCount, choiceIndex, logprobs }),
  );
}

export function decodeChunkPayload(bytes: Uint8Array): ChunkPayload {
  const buffer = Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let text = "";
  let tokenCount = 0;
  let choiceIndex = 0;
  let embedding: ChunkPayload["embedding"];
  let end = buffer.length;
  let at = 0;
  const varint = (): number => {
    // Up to 10 bytes; uint32 fields keep the low 32 bits, as protobuf does.
    let low = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++) {
      if (at >= end) throw new ChunkPayloadError("truncated varint");
      const b = buffer[at++] as number;
      if (shift < 32) low |= (b & 0x7f) << shift;
      shift += 7;
      if ((b & 0x80) === 0) return low >>> 0;
    }
    throw new ChunkPayloadError("varint longer than 10 bytes");
  };
  /** Steps over a field this reader does not keep. */
  const skip = (wireType: number): void => {
    if (wireType === 0) varint();
    else if (wireType === 1) at += 8;
    else if (wireType === 2) {
      const length = varint(); // read before adding: varint() advances `at`
      at += length;
    } else if (wireType === 5) at += 4;
    else throw new ChunkPayloadError(`unsupported wire type ${wireType}`);
    if (at > end) throw new ChunkPayloadError("truncated field");
  };
  while (at < end) {
    const tag = varint();
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (field === 0) throw new ChunkPayloadError("field number 0");
    if (field === 1 && wireType === 2) {
      const length = varint();
      if (length > end - at) throw new ChunkPayloadError("truncated text");
      text = buffer.toString("utf8", at, at + length);
      at += length;
    } else if (field === 2 && wireType === 0) {
      tokenCount = varint();
    } else if (field === 3 && wireType === 0) {
      choiceIndex = varint();
    } else if (field === 4 && wireType === 2) {
      const length = varint();
      if (length > end - at) throw new ChunkPayloadError("truncated embedding");
      // The nested Embedding, read with the same loop's varint over its bounds; repeated occurrences
      // merge as protobuf's do (later fields win).
      const outer = end;
      end = at + length;
      embedding ??= { $typeName: "darkbloom.provider.v1.Embedding", index: 0, values: new Uint8Array() };
      while (at < end) {
        const inner = varint();
        if (inner >>> 3 === 1 && (inner & 7) === 0) embedding.index = varint();
        else if (inner >>> 3 === 2 && (inner & 7) === 2) {
          const n = varint();
          if (n > end - at) throw new ChunkPayloadError("truncated embedding values");
          embedding.values = new Uint8Array(buffer.subarray(at, at + n));
          at += n;
        } else skip(inner & 7);
      }
      end = outer;
    } else if (field === 5) {
      // Log-probabilities: the whole payload is read by the generated codec (see above), from a
      // copy: its bytes fields are views of what it reads, and an opened payload is wiped once read.
      try {
        return fromBinary(ChunkPayloadSchema, new Uint8Array(buffer));
      } catch (e) {
        throw new ChunkPayloadError(`bad logprobs: ${(e as Error).message}`);
      }
    } else {
      skip(wireType);
    }
  }
  const payload: ChunkPayload = {
    $typeName: "darkbloom.provider.v1.ChunkPayload",
    text,
    tokenCount,
    choiceIndex,
    logprobs: [],
  };
  if (embedding) payload.embedding = embedding;
  return payload;
}

function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function writeVarint(out: Buffer, at: number, v: number): number {
  while (v >= 0x80) {
    out[at++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  out[at++] = v;
  return at;
}
