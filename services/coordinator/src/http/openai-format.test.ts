import { Endpoint } from "@darkbloom/protocol/provider/v1";
import { describe, expect, it } from "vitest";
import { ChunkFormatter, completionBody } from "./openai-format.js";

const parse = (event: string) => {
  expect(event.startsWith("data: ")).toBe(true);
  expect(event.endsWith("\n\n")).toBe(true);
  return JSON.parse(event.slice(6, -2));
};

describe("ChunkFormatter", () => {
  it("writes chat chunks in OpenAI's shape, role on the first delta", () => {
    const f = new ChunkFormatter(Endpoint.CHAT_COMPLETIONS, "req_1", 'we"ird', false);
    const first = parse(f.delta(0, 'he said "hi"\n', true));
    expect(first).toEqual({
      id: "chatcmpl-req_1",
      object: "chat.completion.chunk",
      created: f.created,
      model: 'we"ird',
      choices: [
        {
          index: 0,
          delta: { role: "assistant", content: 'he said "hi"\n' },
          logprobs: null,
          finish_reason: null,
        },
      ],
    });
    expect(parse(f.delta(0, "x", false)).choices[0].delta).toEqual({ content: "x" });
    expect(parse(f.finish(0, "length", false)).choices[0]).toMatchObject({
      delta: {},
      finish_reason: "length",
    });
  });

  it("with logprobs: a chat choice opens with its role alone, and completions count text_offset on", () => {
    const entry = (text: string, logprob: number) => ({
      token: new TextEncoder().encode(text),
      logprob: Math.fround(logprob),
      top: [],
    });
    const chat = new ChunkFormatter(Endpoint.CHAT_COMPLETIONS, "r", "m", false, true);
    const events = chat.delta(0, "hé", true, undefined, [entry("h", -1), entry("é", -2)]).split("\n\n");
    expect(events).toHaveLength(3); // the opening event, the delta, and the empty tail of the split
    expect(parse(`${events[0]}\n\n`).choices[0]).toEqual({
      index: 0,
      delta: { role: "assistant", content: "" },
      logprobs: { content: [], refusal: null },
      finish_reason: null,
    });
    const delta = parse(`${events[1]}\n\n`).choices[0];
    expect(delta.delta).toEqual({ content: "hé" });
    expect(delta.logprobs.content.map((c: { bytes: number[] }) => c.bytes)).toEqual([[104], [195, 169]]);
    expect(parse(chat.finish(0, "stop", false)).choices[0].logprobs).toEqual({ content: [], refusal: null });

    const text = new ChunkFormatter(Endpoint.COMPLETIONS, "r", "m", false, true);
    expect(
      parse(text.delta(0, "hé", true, undefined, [entry("h", -1), entry("é", -2)])).choices[0].logprobs,
    ).toMatchObject({ tokens: ["h", "é"], text_offset: [0, 1] });
    expect(
      parse(text.delta(0, "!", false, undefined, [entry("!", -3)])).choices[0].logprobs.text_offset,
    ).toEqual([2]);
    // Without logprobs asked, none are shown whatever a chunk carries.
    const plain = new ChunkFormatter(Endpoint.CHAT_COMPLETIONS, "r", "m", false);
    expect(parse(plain.delta(0, "h", true, undefined, [entry("h", -1)])).choices[0].logprobs).toBeNull();
  });

  it("adds usage:null to every chunk and a final usage chunk when include_usage is set", () => {
    const f = new ChunkFormatter(Endpoint.CHAT_COMPLETIONS, "r", "m", true);
    expect(parse(f.delta(0, "a", true)).usage).toBeNull();
    const u = parse(f.last({ promptTokens: 3, completionTokens: 4, finishReasons: new Map() }));
    expect(u.choices).toEqual([]);
    expect(u.usage).toEqual({ prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
    expect(u.darkbloom).toBeUndefined();
  });

  it("ends with one event holding the usage and the darkbloom object, the usage only when asked", () => {
    const proof = { version: 2 } as unknown as NonNullable<Parameters<ChunkFormatter["last"]>[0]["proof"]>;
    const result = { promptTokens: 3, completionTokens: 4, finishReasons: new Map(), proof };
    const both = parse(new ChunkFormatter(Endpoint.CHAT_COMPLETIONS, "r", "m", true).last(result));
    expect(both).toMatchObject({ choices: [], usage: { total_tokens: 7 }, darkbloom: { version: 2 } });
    const proofOnly = parse(new ChunkFormatter(Endpoint.CHAT_COMPLETIONS, "r", "m", false).last(result));
    expect(proofOnly).toMatchObject({ choices: [], darkbloom: { version: 2 } });
    expect("usage" in proofOnly).toBe(false);
    const none = new ChunkFormatter(Endpoint.CHAT_COMPLETIONS, "r", "m", false);
    expect(none.last({ promptTokens: 3, completionTokens: 4, finishReasons: new Map() })).toBe("");
  });

  it("writes text completion chunks", () => {
    const f = new ChunkFormatter(Endpoint.COMPLETIONS, "r", "m", false);
    expect(parse(f.delta(1, "abc", true))).toMatchObject({
      id: "cmpl-r",
      object: "text_completion",
      choices: [{ text: "abc", index: 1, logprobs: null, finish_reason: null }],
    });
  });

  it("builds whole bodies for both endpoints", () => {
    const result = { promptTokens: 5, completionTokens: 2, finishReasons: new Map([[0, "stop"]]) };
    const chat = completionBody(Endpoint.CHAT_COMPLETIONS, "r", "m", ["hi"], result);
    expect(chat).toMatchObject({
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }],
      usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 },
    });
    const text = completionBody(Endpoint.COMPLETIONS, "r", "m", ["hi"], result);
    expect(text).toMatchObject({
      object: "text_completion",
      choices: [{ text: "hi", finish_reason: "stop" }],
    });
  });
});
