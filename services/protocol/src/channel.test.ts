import { describe, expect, it } from "vitest";
import { Channel, ChannelClosedError } from "./channel.js";

async function drain<T>(ch: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const v of ch) out.push(v);
  return out;
}

describe("Channel", () => {
  it("delivers queued items in order, then ends on close", async () => {
    const ch = new Channel<number>();
    ch.push(1);
    ch.push(2);
    const done = drain(ch);
    ch.push(3);
    ch.close();
    expect(await done).toEqual([1, 2, 3]);
  });

  it("hands an item straight to a waiting reader", async () => {
    const ch = new Channel<string>();
    const it = ch[Symbol.asyncIterator]();
    const pending = it.next();
    ch.push("a");
    expect(await pending).toEqual({ value: "a", done: false });
  });

  it("refuses pushes after close and reports it through offer", () => {
    const ch = new Channel<number>();
    ch.close();
    expect(() => ch.push(1)).toThrow(ChannelClosedError);
    expect(ch.offer(1)).toBe(false);
  });

  it("fails a waiting reader at once", async () => {
    const ch = new Channel<number>();
    const it = ch[Symbol.asyncIterator]();
    const pending = it.next();
    ch.fail(new Error("boom"));
    await expect(pending).rejects.toThrow("boom");
    await expect(it.next()).rejects.toThrow("boom");
  });

  it("keeps order across many items (compaction)", async () => {
    const ch = new Channel<number>();
    for (let i = 0; i < 5000; i++) ch.push(i);
    ch.close();
    const got = await drain(ch);
    expect(got.length).toBe(5000);
    expect(got.every((v, i) => v === i)).toBe(true);
  });
});
