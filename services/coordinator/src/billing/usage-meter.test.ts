import { create } from "@bufbuild/protobuf";
import { ChunkPayloadSchema, UsageSchema } from "@darkbloom/protocol/provider/v1";
import { describe, expect, it } from "vitest";
import { MAX_TOKEN_BYTES, MeteringViolation, type MeterLimits, UsageMeter } from "./usage-meter.js";

const limits = (over: Partial<MeterLimits> = {}): MeterLimits => ({
  choices: 1,
  maxTokens: 100,
  maxStopBytes: 0,
  promptTokenBound: 200,
  ...over,
});
const chunk = (text: string, tokenCount: number, choiceIndex = 0) =>
  create(ChunkPayloadSchema, { text, tokenCount, choiceIndex });
const usage = (promptTokens: number, completionTokens: number) =>
  create(UsageSchema, { promptTokens, completionTokens });

describe("UsageMeter", () => {
  it("accepts what an honest engine sends: a token a chunk, text-less tokens joined to the next text, split characters", () => {
    const m = new UsageMeter(limits());
    expect(m.chunk(chunk("Hello", 1))).toBeUndefined();
    // A control token that decodes to nothing travels with the next token's text.
    expect(m.chunk(chunk(" world", 2))).toBeUndefined();
    // An emoji split over four byte tokens arrives whole, with all four.
    expect(m.chunk(chunk("🙂", 4))).toBeUndefined();
    // Held-back text flushed at the end with no tokens of its own.
    expect(m.chunk(chunk("!", 0))).toBeUndefined();
    expect(m.delivered).toBe(7);
    expect(m.complete(usage(12, 7))).toEqual({ usage: { promptTokens: 12, completionTokens: 7 } });
  });

  it("accepts the withheld tokens of a stop sequence in the final count, and no more", () => {
    const m = new UsageMeter(limits({ maxStopBytes: 4 }));
    for (let i = 0; i < 20; i++) expect(m.chunk(chunk("ab", 1))).toBeUndefined();
    // 40 bytes for 20 tokens leaves room for 20 text-less ones beyond the streamed 20 (bytes), and
    // the allowance of 8 + 20/16; the stop sequence adds 4.
    const tail = 40 + 8 + 2 - 20 + 4;
    expect(m.complete(usage(5, 20 + tail))).toHaveProperty("usage");
    expect(m.complete(usage(5, 20 + tail + 1))).toMatchObject({
      violation: { code: MeteringViolation.usageMismatch },
    });
    expect(m.complete(usage(5, 19))).toMatchObject({ violation: { code: MeteringViolation.usageMismatch } });
  });

  it("refuses more tokens than the text can hold", () => {
    const m = new UsageMeter(limits({ maxTokens: 1000 }));
    expect(m.chunk(chunk("x", 500))).toMatchObject({ code: MeteringViolation.tokensInflated });
    expect(m.delivered).toBe(0);
  });

  it("refuses text its tokens cannot decode to, counted over the whole choice", () => {
    const m = new UsageMeter(limits());
    expect(m.chunk(chunk("a".repeat(MAX_TOKEN_BYTES), 0))).toBeUndefined();
    expect(m.chunk(chunk("a", 0))).toMatchObject({ code: MeteringViolation.chunkOversized });
    const big = new UsageMeter(limits());
    expect(big.chunk(chunk("a".repeat(3 * MAX_TOKEN_BYTES), 1))).toMatchObject({
      code: MeteringViolation.chunkOversized,
    });
  });

  it("refuses a choice past max_tokens and choices the request did not ask for", () => {
    const m = new UsageMeter(limits({ maxTokens: 4, choices: 2 }));
    expect(m.chunk(chunk("abcd", 4, 1))).toBeUndefined();
    expect(m.chunk(chunk("e", 1, 1))).toMatchObject({ code: MeteringViolation.maxTokensExceeded });
    expect(m.chunk(chunk("e", 1, 2))).toMatchObject({ code: MeteringViolation.choiceOutOfRange });
    expect(m.chunk(chunk("abcd", 4, 0))).toBeUndefined();
    expect(m.complete(usage(3, 9))).toMatchObject({ violation: { code: MeteringViolation.usageMismatch } });
    expect(m.complete(usage(3, 8))).toHaveProperty("usage");
  });

  it("refuses a prompt count of zero or above the prompt's bound", () => {
    const m = new UsageMeter(limits({ promptTokenBound: 50 }));
    expect(m.complete(usage(0, 0))).toMatchObject({ violation: { code: MeteringViolation.usageMismatch } });
    expect(m.complete(usage(51, 0))).toMatchObject({ violation: { code: MeteringViolation.usageMismatch } });
    expect(m.complete(usage(50, 0))).toEqual({ usage: { promptTokens: 50, completionTokens: 0 } });
  });
});
