import { describe, expect, it } from "vitest";
import { decodeChunkPayload } from "../chunk-payload.js";
import { BoxKeyPair } from "../sealed-box.js";
import { acceptedMessage } from "./messages.js";
import { ChunkDraft, Outbound } from "./outbound.js";

describe("outbound chunk coalescing", () => {
  it("appends to a chunk until the transport takes it, then builds the message", async () => {
    const outbound = new Outbound();
    const iterator = outbound.messages()[Symbol.asyncIterator]();
    outbound.send(acceptedMessage("r"));
    const draft = new ChunkDraft("r", 0n, 0, "a", 1);
    outbound.sendChunk(draft);
    expect(draft.append("b", 1)).toBe(true);
    expect(draft.append("c", 2)).toBe(true);
    expect((await iterator.next()).value?.message.case).toBe("inferenceAccepted");
    const chunk = (await iterator.next()).value;
    expect(chunk?.message.case).toBe("inferenceChunk");
    expect(chunk?.message.value).toMatchObject({
      requestId: "r",
      sequence: 0n,
      payload: { case: "plaintext", value: { text: "abc", tokenCount: 4, choiceIndex: 0 } },
    });
    // Taken: later tokens need a new chunk.
    expect(draft.append("d", 1)).toBe(false);
    outbound.close();
    expect((await iterator.next()).done).toBe(true);
  });

  it("a chunk handed straight to a waiting transport is taken at once", async () => {
    const outbound = new Outbound();
    const iterator = outbound.messages()[Symbol.asyncIterator]();
    const pending = iterator.next();
    const draft = new ChunkDraft("r", 0n, 1, "x", 1);
    outbound.sendChunk(draft);
    const message = (await pending).value;
    expect(draft.taken).toBe(true);
    expect(message?.message.value).toMatchObject({ payload: { value: { text: "x", choiceIndex: 1 } } });
  });

  it("seals a draft with the request's key when the transport takes it", async () => {
    const provider = BoxKeyPair.generate();
    const coordinator = BoxKeyPair.generate();
    const outbound = new Outbound();
    const iterator = outbound.messages()[Symbol.asyncIterator]();
    const draft = new ChunkDraft("r", 3n, 2, "he", 1, provider.keyFor(coordinator.publicKey));
    outbound.sendChunk(draft);
    draft.append("llo", 1);
    const chunk = (await iterator.next()).value?.message;
    if (chunk?.case !== "inferenceChunk" || chunk.value.payload.case !== "sealed")
      throw new Error("not sealed");
    expect(chunk.value.sequence).toBe(3n);
    expect(chunk.value.payload.value.senderPublicKey).toHaveLength(0);
    const opened = coordinator.keyFor(provider.publicKey).open(chunk.value.payload.value);
    expect(decodeChunkPayload(opened)).toMatchObject({ text: "hello", tokenCount: 2, choiceIndex: 2 });
  });

  it("seals an embedding draft's vector and count when the transport takes it, never appending to it", async () => {
    const provider = BoxKeyPair.generate();
    const coordinator = BoxKeyPair.generate();
    const outbound = new Outbound();
    const iterator = outbound.messages()[Symbol.asyncIterator]();
    const values = new Uint8Array([0, 0, 128, 63, 0, 0, 0, 191]);
    const key = provider.keyFor(coordinator.publicKey);
    const draft = new ChunkDraft("r", 1n, 0, "", 5, key, { index: 2, values });
    outbound.sendChunk(draft);
    expect(draft.append("x", 1)).toBe(false);
    const chunk = (await iterator.next()).value?.message;
    if (chunk?.case !== "inferenceChunk" || chunk.value.payload.case !== "sealed")
      throw new Error("not sealed");
    expect(chunk.value.sequence).toBe(1n);
    const opened = decodeChunkPayload(coordinator.keyFor(provider.publicKey).open(chunk.value.payload.value));
    expect(opened).toMatchObject({ text: "", tokenCount: 5, embedding: { index: 2 } });
    expect(Buffer.from(opened.embedding?.values ?? [])).toEqual(Buffer.from(values));
  });

  it("runs afterFlush once everything queued before it is taken, and at once when closed", async () => {
    const outbound = new Outbound();
    const iterator = outbound.messages()[Symbol.asyncIterator]();
    const ran: string[] = [];
    outbound.send(acceptedMessage("r"));
    outbound.afterFlush(() => ran.push("flushed"));
    expect(ran).toEqual([]);
    await iterator.next();
    outbound.close();
    expect((await iterator.next()).done).toBe(true);
    expect(ran).toEqual(["flushed"]);
    outbound.afterFlush(() => ran.push("closed"));
    expect(ran).toEqual(["flushed", "closed"]);
  });
});
