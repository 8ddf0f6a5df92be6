import { create } from "@bufbuild/protobuf";
import { ChunkPayloadSchema, UsageSchema } from "@darkbloom/protocol/provider/v1";
import { describe, expect, it } from "vitest";
import {
  confirmedCount,
  MAX_TOKEN_BYTES,
  MeteringViolation,
  type MeterLimits,
  type TokenCounter,
  UsageMeter,
} from "./usage-meter.js";

const limits = (over: Partial<MeterLimits> = {}): MeterLimits => ({
  choices: 1,
  maxTokens: 100,
  promptTokenBound: 200,
  ...over,
});
const chunk = (text: string, tokenCount: number, choiceIndex = 0) =>
  create(ChunkPayloadSchema, { text, tokenCount, choiceIndex });
const usage = (promptTokens: number, completionTokens: number) =>
  create(UsageSchema, { promptTokens, completionTokens });

describe("UsageMeter", () => {
  it("accepts what an honest engine sends: a token a chunk, text-less tokens joined to the next text, split characters", async () => {
    const m = new UsageMeter(limits());
    expect(m.chunk(chunk("Hello", 1))).toBeUndefined();
    // A control token that decodes to nothing travels with the next token's text.
    expect(m.chunk(chunk(" world", 2))).toBeUndefined();
    // An emoji split over four byte tokens arrives whole, with all four.
    expect(m.chunk(chunk("🙂", 4))).toBeUndefined();
    // Held-back text flushed at the end with no tokens of its own.
    expect(m.chunk(chunk("!", 0))).toBeUndefined();
    expect(await m.delivered()).toBe(7);
    expect(m.complete(usage(12, 7))).toEqual({ usage: { promptTokens: 12, completionTokens: 7 } });
    expect(m.texts).toEqual(["Hello world🙂!"]);
  });

  it("bounds the final count by the text without the tokenizer: bytes / 256 to bytes + 1 a choice", async () => {
    const m = new UsageMeter(limits({ choices: 2 }));
    for (let i = 0; i < 20; i++) expect(m.chunk(chunk("ab", 1, i % 2))).toBeUndefined();
    // 20 bytes a choice: at least 1 token each, at most 21.
    expect(m.complete(usage(5, 42))).toHaveProperty("usage");
    expect(m.complete(usage(5, 43))).toMatchObject({ violation: { code: MeteringViolation.usageMismatch } });
    expect(m.complete(usage(5, 2))).toHaveProperty("usage");
    expect(m.complete(usage(5, 1))).toMatchObject({ violation: { code: MeteringViolation.usageMismatch } });
    // What a response that did not complete is paid for: the tokens claimed, never above the cap.
    expect(await m.delivered()).toBe(20);
  });

  it("refuses more tokens than the text can hold", async () => {
    const m = new UsageMeter(limits({ maxTokens: 1000 }));
    expect(m.chunk(chunk("x", 500))).toMatchObject({ code: MeteringViolation.tokensInflated });
    expect(await m.delivered()).toBe(0);
    expect(m.texts).toEqual([""]);
  });

  it("refuses text its tokens cannot decode to, counted over the whole choice", async () => {
    const m = new UsageMeter(limits());
    expect(m.chunk(chunk("a".repeat(MAX_TOKEN_BYTES), 0))).toBeUndefined();
    expect(m.chunk(chunk("a", 0))).toMatchObject({ code: MeteringViolation.chunkOversized });
    const big = new UsageMeter(limits());
    expect(big.chunk(chunk("a".repeat(3 * MAX_TOKEN_BYTES), 1))).toMatchObject({
      code: MeteringViolation.chunkOversized,
    });
  });

  it("refuses a choice past max_tokens and choices the request did not ask for", async () => {
    const m = new UsageMeter(limits({ maxTokens: 4, choices: 2 }));
    expect(m.chunk(chunk("abcd", 4, 1))).toBeUndefined();
    expect(m.chunk(chunk("e", 1, 1))).toMatchObject({ code: MeteringViolation.maxTokensExceeded });
    expect(m.chunk(chunk("e", 1, 2))).toMatchObject({ code: MeteringViolation.choiceOutOfRange });
    expect(m.chunk(chunk("abcd", 4, 0))).toBeUndefined();
    // Four bytes could be five tokens (a leading-space marker), but a choice is never more than its
    // max_tokens.
    expect(m.complete(usage(3, 9))).toMatchObject({ violation: { code: MeteringViolation.usageMismatch } });
    expect(m.complete(usage(3, 8))).toHaveProperty("usage");
  });

  it("refuses a prompt count of zero or above the prompt's bound", async () => {
    const m = new UsageMeter(limits({ promptTokenBound: 50 }));
    expect(m.complete(usage(0, 0))).toMatchObject({ violation: { code: MeteringViolation.usageMismatch } });
    expect(m.complete(usage(51, 0))).toMatchObject({ violation: { code: MeteringViolation.usageMismatch } });
    expect(m.complete(usage(50, 0))).toEqual({ usage: { promptTokens: 50, completionTokens: 0 } });
  });

  describe("with the model's tokenizer", () => {
    // A stand-in tokenizer: one token a word, counted once per state of the texts.
    let counts = 0;
    const words = {
      countTexts: async (texts: readonly string[]) => {
        counts++;
        return texts.reduce((sum, t) => sum + t.split(" ").filter(Boolean).length, 0);
      },
    };

    it("accepts exactly the count of the text delivered and of the prompt, nothing else", async () => {
      const m = new UsageMeter(limits({ choices: 2 }), words);
      expect(m.counted).toBe(true);
      expect(m.chunk(chunk("one two", 2, 0))).toBeUndefined();
      expect(m.chunk(chunk(" three", 1, 0))).toBeUndefined();
      expect(m.chunk(chunk("four", 3, 1))).toBeUndefined();
      const counted = await m.countDelivered();
      expect(counted).toBe(4);
      const own = { promptTokens: 9, completionTokens: counted };
      expect(m.complete(usage(9, 4), own)).toEqual({ usage: { promptTokens: 9, completionTokens: 4 } });
      // What the bounds would allow is not enough: the count is the count.
      for (const [p, c] of [
        [9, 5],
        [9, 3],
        [10, 4],
        [8, 4],
      ] as const) {
        expect(m.complete(usage(p, c), own)).toMatchObject({
          violation: { code: MeteringViolation.usageMismatch },
        });
      }
      // Without a count (the tokenizer failed) the bounds decide.
      expect(m.complete(usage(9, 5))).toHaveProperty("usage");
    });

    it("pays a response that did not complete for the count of its text, not the tokens claimed", async () => {
      const m = new UsageMeter(limits(), words);
      expect(m.chunk(chunk("a b c d", 9))).toBeUndefined();
      const before = counts;
      expect(await m.delivered()).toBe(4);
      expect(await m.countDelivered()).toBe(4);
      expect(counts).toBe(before + 1);
      expect(m.chunk(chunk(" e", 1))).toBeUndefined();
      expect(await m.delivered()).toBe(5);
    });

    it("counts a choice at most max_tokens, whatever its text re-tokenizes into", async () => {
      // A liar's padding: 2 tokens claimed per chunk, each carrying 200 one-token words (the chunk
      // checks allow up to MAX_TOKEN_BYTES a token); or an honest cut character's replacement text.
      const padded = "w ".repeat(200);
      const m = new UsageMeter(limits({ choices: 2, maxTokens: 6 }), words);
      for (let i = 0; i < 3; i++) expect(m.chunk(chunk(padded, 2, 0))).toBeUndefined();
      expect(m.chunk(chunk("one two", 2, 1))).toBeUndefined();
      expect(await m.countDelivered()).toBe(6 + 2);
      expect(await m.delivered()).toBe(8);
      const now = new UsageMeter(limits({ choices: 2, maxTokens: 6 }), {
        ...words,
        countTextsNow: (texts) => texts.reduce((sum, t) => sum + t.split(" ").filter(Boolean).length, 0),
      });
      for (let i = 0; i < 3; i++) expect(now.chunk(chunk(padded, 2, 0))).toBeUndefined();
      expect(now.chunk(chunk("one two", 2, 1))).toBeUndefined();
      expect(now.countDeliveredNow()).toBe(8);
      // The provider's claim of the uncapped count is refused: the count is the capped one.
      const own = { promptTokens: 9, completionTokens: 8 };
      expect(m.complete(usage(9, 602), own)).toMatchObject({
        violation: { code: MeteringViolation.usageMismatch },
      });
      expect(m.complete(usage(9, 8), own)).toEqual({ usage: { promptTokens: 9, completionTokens: 8 } });
      // Without a count, the bounds stop at max_tokens a choice too.
      expect(m.complete(usage(9, 14))).toMatchObject({
        violation: { code: MeteringViolation.usageMismatch },
      });
      expect(m.complete(usage(9, 12))).toHaveProperty("usage");
    });
  });
});

describe("confirmedCount", () => {
  const input = { kind: "text" as const, prompt: "p" };
  const fixed = (prompt: number, completion: number): TokenCounter & { calls: number } => {
    const c = {
      calls: 0,
      countPrompt: async () => {
        c.calls++;
        return prompt;
      },
      countTexts: async () => completion,
    };
    return c;
  };
  const port = (prompt: number, completion: number, reference: TokenCounter) => {
    const differed: string[] = [];
    const counter: TokenCounter = {
      ...fixed(prompt, completion),
      reference: { counter: reference, differed: (d) => differed.push(d) },
    };
    return { counter, differed };
  };

  it("takes a count the provider agrees with, and asks llama.cpp nothing", async () => {
    const llamaCpp = fixed(7, 3);
    const { counter, differed } = port(7, 3, llamaCpp);
    expect(
      await confirmedCount(counter, input, ["x"], 100, usage(7, 3), { promptTokens: 7, completionTokens: 3 }),
    ).toEqual({
      counted: { promptTokens: 7, completionTokens: 3 },
      recounted: false,
    });
    expect(llamaCpp.calls).toBe(0);
    expect(differed).toEqual([]);
  });

  it("lets llama.cpp's count stand when the provider disagrees with the port, and reports a port that differs", async () => {
    // The provider is right and the port wrong: llama.cpp's count decides, and the port is reported.
    const { counter, differed } = port(7, 4, fixed(7, 3));
    expect(
      await confirmedCount(counter, input, ["x"], 100, usage(7, 3), { promptTokens: 7, completionTokens: 4 }),
    ).toEqual({
      counted: { promptTokens: 7, completionTokens: 3 },
      recounted: true,
    });
    expect(differed).toHaveLength(1);
    // The provider lies and the port is right: the same count again, the port not reported.
    const honest = port(7, 3, fixed(7, 3));
    expect(
      await confirmedCount(honest.counter, input, ["x"], 100, usage(7, 9), {
        promptTokens: 7,
        completionTokens: 3,
      }),
    ).toEqual({ counted: { promptTokens: 7, completionTokens: 3 }, recounted: true });
    expect(honest.differed).toEqual([]);
  });

  it("recounts each choice at most max_tokens, as the port's count is", async () => {
    const texts = {
      countPrompt: async () => 7,
      countTexts: async (t: readonly string[]) => t.join("").length,
    };
    const { counter } = port(7, 5, texts);
    // llama.cpp counts "abcdefgh" 8 and "xy" 2; max_tokens 3 makes it 3 + 2.
    expect(
      await confirmedCount(counter, input, ["abcdefgh", "xy"], 3, usage(7, 10), {
        promptTokens: 7,
        completionTokens: 5,
      }),
    ).toEqual({ counted: { promptTokens: 7, completionTokens: 5 }, recounted: true });
  });

  it("keeps llama.cpp's own count when there is no port behind it", async () => {
    const llamaCpp = fixed(7, 3);
    expect(
      await confirmedCount(llamaCpp, input, ["x"], 100, usage(7, 9), {
        promptTokens: 7,
        completionTokens: 3,
      }),
    ).toEqual({
      counted: { promptTokens: 7, completionTokens: 3 },
      recounted: false,
    });
  });
});
