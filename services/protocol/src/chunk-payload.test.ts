import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ChunkPayloadError, decodeChunkPayload, encodeChunkPayload } from "./chunk-payload.js";
import { ChunkPayloadSchema } from "./gen/darkbloom/provider/v1/provider_pb.js";

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

  it("refuses truncated or malformed encodings", () => {
    for (const bad of [[0x0a, 0x05, 0x61], [0x10], [0x10, 0x80], [0x00, 0x01], [0x0b], [0x15, 1, 2]]) {
      expect(() => decodeChunkPayload(Buffer.from(bad))).toThrow(ChunkPayloadError);
    }
  });
});
