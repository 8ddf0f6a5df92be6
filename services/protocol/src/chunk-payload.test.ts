import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  ChunkPayloadError,
  decodeChunkPayload,
  encodeChunkPayload,
  encodeEmbeddingChunkPayload,
  encodeLogprobsChunkPayload,
} from "./chunk-payload.js";
import {
  ChunkPayloadSchema,
  TokenLogprobSchema,
  TopLogprobSchema,
} from "./gen/darkbloom/provider/v1/provider_pb.js";

const SAMPLES: Array<[string, number, number]> = [
  ["", 0, 0],
  ["tok0 ", 1, 0],
  ["é中👋\u0000\n", 3, 7],
  ["x".repeat(300), 127, 128],
  ["y".repeat(20_000), 16_384, 2 ** 32 - 1],
  ["", 0, 5],
];

describe("ChunkPayload codec", () => {
  it("writes exactly what toBinary writes", () => {
    for (const [text, tokenCount, choiceIndex] of SAMPLES) {
      const reference = toBinary(
        ChunkPayloadSchema,
        create(ChunkPayloadSchema, { text, tokenCount, choiceIndex }),
      );
      expect(Buffer.from(encodeChunkPayload(text, tokenCount, choiceIndex))).toEqual(Buffer.from(reference));
    }
  });

  it("reads what fromBinary reads, including reordered, repeated and unknown fields", () => {
    for (const [text, tokenCount, choiceIndex] of SAMPLES) {
      const bytes = encodeChunkPayload(text, tokenCount, choiceIndex);
      const ours = decodeChunkPayload(bytes);
      const theirs = fromBinary(ChunkPayloadSchema, bytes);
      expect({ ...ours }).toEqual({
        $typeName: theirs.$typeName,
        text: theirs.text,
        tokenCount: theirs.tokenCount,
        choiceIndex: theirs.choiceIndex,
        logprobs: theirs.logprobs,
      });
    }
    // choice_index 2, an unknown varint field 9, an unknown bytes field 10, text twice (last wins),
    // a fixed32 field 11, token_count 4.
    const odd = Buffer.from([
      0x18, 0x02, 0x48, 0x96, 0x01, 0x52, 0x02, 0xaa, 0xbb, 0x0a, 0x01, 0x61, 0x0a, 0x01, 0x62, 0x5d, 1, 2, 3,
      4, 0x10, 0x04,
    ]);
    const theirs = fromBinary(ChunkPayloadSchema, odd);
    expect(decodeChunkPayload(odd)).toMatchObject({
      text: theirs.text,
      tokenCount: theirs.tokenCount,
      choiceIndex: theirs.choiceIndex,
    });
    expect(decodeChunkPayload(odd)).toMatchObject({ text: "b", tokenCount: 4, choiceIndex: 2 });
  });

  it("carries log-probabilities through the generated codec, in any field order", () => {
    const logprobs = [
      create(TokenLogprobSchema, {
        token: new TextEncoder().encode("hé"),
        logprob: Math.fround(-0.25),
        top: [
          create(TopLogprobSchema, { token: new TextEncoder().encode("hé"), logprob: Math.fround(-0.25) }),
          create(TopLogprobSchema, { token: new Uint8Array([0xe2, 0x80]), logprob: Math.fround(-2.5) }),
        ],
      }),
      create(TokenLogprobSchema, { token: new Uint8Array(), logprob: -7 }),
    ];
    const bytes = encodeLogprobsChunkPayload("hé", 2, 3, logprobs);
    const read = decodeChunkPayload(bytes);
    expect(read).toMatchObject({ text: "hé", tokenCount: 2, choiceIndex: 3 });
    expect(read.logprobs).toEqual(logprobs);
    // The logprobs field first, then the text: still read whole.
    const reordered = Buffer.concat([
      Buffer.from(toBinary(ChunkPayloadSchema, create(ChunkPayloadSchema, { logprobs }))),
      encodeChunkPayload("hé", 2, 3),
    ]);
    expect(decodeChunkPayload(reordered)).toEqual(read);
    // A logprobs field that is not a TokenLogprob.
    expect(() => decodeChunkPayload(Buffer.from([0x2a, 0x02, 0x15, 0x01]))).toThrow(ChunkPayloadError);
  });

  it("refuses truncated or malformed encodings", () => {
    for (const bad of [[0x0a, 0x05, 0x61], [0x10], [0x10, 0x80], [0x00, 0x01], [0x0b], [0x15, 1, 2]]) {
      expect(() => decodeChunkPayload(Buffer.from(bad))).toThrow(ChunkPayloadError);
    }
  });

  it("writes and reads embeddings as toBinary and fromBinary do", () => {
    const values = new Uint8Array(Array.from({ length: 512 }, (_, i) => (i * 37) % 256));
    for (const [index, bytes, tokenCount] of [
      [0, values, 7],
      [3, values.subarray(0, 4), 0],
      [2047, new Uint8Array(), 1],
    ] as const) {
      const reference = toBinary(
        ChunkPayloadSchema,
        create(ChunkPayloadSchema, { tokenCount, embedding: { index, values: bytes } }),
      );
      const ours = encodeEmbeddingChunkPayload(index, bytes, tokenCount);
      expect(Buffer.from(ours)).toEqual(Buffer.from(reference));
      const read = decodeChunkPayload(ours);
      expect(read.tokenCount).toBe(tokenCount);
      expect(read.embedding?.index).toBe(index);
      expect(Buffer.from(read.embedding?.values ?? [])).toEqual(Buffer.from(bytes));
      expect(fromBinary(ChunkPayloadSchema, ours).embedding?.index).toBe(index);
    }
    // The nested message's fields reordered, an unknown field inside it, and the message twice
    // (merged: the later index wins, the values stay).
    const odd = Buffer.from([0x22, 0x06, 0x12, 0x02, 0xaa, 0xbb, 0x18, 0x01, 0x22, 0x02, 0x08, 0x05]);
    const theirs = fromBinary(ChunkPayloadSchema, odd);
    const ours = decodeChunkPayload(odd);
    expect(ours.embedding?.index).toBe(theirs.embedding?.index);
    expect(Buffer.from(ours.embedding?.values ?? [])).toEqual(Buffer.from(theirs.embedding?.values ?? []));
    expect(() => decodeChunkPayload(Buffer.from([0x22, 0x04, 0x12, 0x05, 0xaa]))).toThrow(ChunkPayloadError);
  });
});
