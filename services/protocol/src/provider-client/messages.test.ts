import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { decodeChunkPayload } from "../chunk-payload.js";
import { type ConnectRequest, ConnectRequestSchema } from "../gen/darkbloom/provider/v1/provider_pb.js";
import { BoxKeyPair } from "../sealed-box.js";
import {
  acceptedMessage,
  chunkMessage,
  completeMessage,
  errorMessage,
  sealedChunkMessage,
} from "./messages.js";

/** The same message built by the reflective API: what the hand-written literals must equal on the wire. */
function bytesOf(init: MessageInitShape<typeof ConnectRequestSchema>): Uint8Array {
  return toBinary(ConnectRequestSchema, create(ConnectRequestSchema, init));
}

function wire(message: ConnectRequest): Uint8Array {
  return toBinary(ConnectRequestSchema, message);
}

describe("provider message builders", () => {
  it("write the per-request messages exactly as create() would", () => {
    expect(wire(acceptedMessage("r1"))).toEqual(
      bytesOf({ message: { case: "inferenceAccepted", value: { requestId: "r1" } } }),
    );
    expect(wire(chunkMessage("r1", 7n, "hé", 2, 1))).toEqual(
      bytesOf({
        message: {
          case: "inferenceChunk",
          value: {
            requestId: "r1",
            sequence: 7n,
            payload: { case: "plaintext", value: { text: "hé", tokenCount: 2, choiceIndex: 1 } },
          },
        },
      }),
    );
    const failure = { httpStatus: 503, code: "provider_draining", message: "draining", retryable: true };
    expect(wire(errorMessage("r1", failure))).toEqual(
      bytesOf({ message: { case: "inferenceError", value: { requestId: "r1", ...failure } } }),
    );
  });

  it("seal a chunk's payload to the request's key, with a fresh nonce each time", () => {
    const provider = BoxKeyPair.generate();
    const coordinator = BoxKeyPair.generate();
    const key = provider.keyFor(coordinator.publicKey);
    const sealed = [
      sealedChunkMessage("r1", 0n, key, "tok", 1, 0),
      sealedChunkMessage("r1", 1n, key, "tok", 1, 0),
    ];
    const boxes = sealed.map((m) => {
      const chunk = m.message;
      if (chunk.case !== "inferenceChunk" || chunk.value.payload.case !== "sealed")
        throw new Error("not sealed");
      return chunk.value.payload.value;
    });
    expect(boxes[0]?.nonce).not.toEqual(boxes[1]?.nonce);
    const opener = coordinator.keyFor(provider.publicKey);
    for (const box of boxes) {
      expect(decodeChunkPayload(opener.open(box))).toMatchObject({
        text: "tok",
        tokenCount: 1,
        choiceIndex: 0,
      });
    }
  });

  it("report each choice's finish reason and the usage on completion", () => {
    const message = completeMessage("r1", 5, 9, [
      { index: 0, finishReason: "stop" },
      { index: 1, finishReason: "length" },
    ]);
    expect(message.message.value).toMatchObject({
      requestId: "r1",
      usage: { promptTokens: 5, completionTokens: 9 },
      choices: [
        { index: 0, finishReason: "stop" },
        { index: 1, finishReason: "length" },
      ],
    });
  });
});
