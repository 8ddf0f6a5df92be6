import { Endpoint, ModelFeature } from "@darkbloom/protocol/provider/v1";
import { describe, expect, it } from "vitest";
import { ApiError } from "../errors/index.js";
import { validateRequest } from "./request-validation.js";

const enc = (v: unknown) => new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));
const chat = (extra: Record<string, unknown> = {}) =>
  enc({ model: "m", messages: [{ role: "user", content: "hello there" }], ...extra });

function errorOf(endpoint: Endpoint, body: Uint8Array): ApiError {
  try {
    validateRequest(endpoint, body);
  } catch (e) {
    if (e instanceof ApiError) return e;
    throw e;
  }
  throw new Error("expected a validation error");
}

describe("validateRequest", () => {
  it("accepts a minimal chat request and keeps the raw body", () => {
    const body = chat();
    const r = validateRequest(Endpoint.CHAT_COMPLETIONS, body);
    expect(r).toMatchObject({ model: "m", stream: false, n: 1, maxTokens: undefined, includeUsage: false });
    expect(r.body).toBe(body);
    expect(r.promptTokens).toBeGreaterThan(4);
  });

  it("reads response_format, needing a provider that enforces grammars, and names a bad one's param", () => {
    expect(validateRequest(Endpoint.CHAT_COMPLETIONS, chat()).features).toEqual([]);
    const json = validateRequest(
      Endpoint.CHAT_COMPLETIONS,
      chat({ response_format: { type: "json_object" } }),
    );
    expect(json).toMatchObject({ format: { type: "json_object" }, features: [ModelFeature.GRAMMAR] });
    const text = validateRequest(
      Endpoint.COMPLETIONS,
      enc({ model: "m", prompt: "x", response_format: { type: "text" } }),
    );
    expect(text.format).toBeUndefined();
    const schema = { type: "object", properties: { a: { type: "string", format: "uri" } } };
    const e = errorOf(
      Endpoint.CHAT_COMPLETIONS,
      chat({ response_format: { type: "json_schema", json_schema: { name: "s", schema } } }),
    );
    expect(e.status).toBe(400);
    expect(e).toMatchObject({
      type: "invalid_request_error",
      param: "response_format.json_schema.schema.properties.a.format",
    });
    const strict = errorOf(
      Endpoint.CHAT_COMPLETIONS,
      chat({
        response_format: {
          type: "json_schema",
          json_schema: { name: "s", strict: true, schema: { type: "object", properties: {} } },
        },
      }),
    );
    expect(strict.param).toBe("response_format.json_schema.schema.additionalProperties");
  });

  it("reads logprobs as the provider will, and routes them only to providers that report them", () => {
    const chatAsk = validateRequest(Endpoint.CHAT_COMPLETIONS, chat({ logprobs: true, top_logprobs: 4 }));
    expect(chatAsk.logprobs).toBe(4);
    expect(chatAsk.features).toEqual([ModelFeature.LOGPROBS]);
    expect(validateRequest(Endpoint.CHAT_COMPLETIONS, chat({ logprobs: true })).logprobs).toBe(0);
    const off = validateRequest(Endpoint.CHAT_COMPLETIONS, chat({ logprobs: false, top_logprobs: null }));
    expect(off.logprobs).toBeUndefined();
    expect(off.features).toEqual([]);
    const body = (extra: Record<string, unknown>) =>
      new TextEncoder().encode(JSON.stringify({ model: "m", prompt: "x", ...extra }));
    // Text completions: `logprobs` is the number of alternatives itself, at most 5 (OpenAI's limit).
    expect(validateRequest(Endpoint.COMPLETIONS, body({ logprobs: 0 })).logprobs).toBe(0);
    expect(validateRequest(Endpoint.COMPLETIONS, body({ logprobs: 5 })).logprobs).toBe(5);
    expect(errorOf(Endpoint.COMPLETIONS, body({ logprobs: 6 })).param).toBe("logprobs");
    expect(errorOf(Endpoint.COMPLETIONS, body({ logprobs: true })).param).toBe("logprobs");
  });

  it("refuses by name what it does not do yet, and passes their empty or default forms", () => {
    const refused: Array<[Record<string, unknown>, string]> = [
      [{ functions: [{ name: "f" }] }, "functions"],
      [{ function_call: { name: "f" } }, "function_call"],
      [{ modalities: ["text", "audio"] }, "modalities"],
      [{ prediction: { type: "content", content: "x" } }, "prediction"],
    ];
    for (const [extra, param] of refused) {
      const e = errorOf(Endpoint.CHAT_COMPLETIONS, chat(extra));
      expect(e.param, param).toBe(param);
      expect(e.message).toMatch(/not supported by this network yet/);
    }
    for (const extra of [
      { tools: [] },
      { tool_choice: "none" },
      { logit_bias: {} },
      { logprobs: false },
      { top_logprobs: 0 },
      { modalities: ["text"] },
    ]) {
      expect(
        () => validateRequest(Endpoint.CHAT_COMPLETIONS, chat(extra)),
        JSON.stringify(extra),
      ).not.toThrow();
    }
  });

  it("reads tools as the provider will: what the grammar needs, checked before anything is reserved", () => {
    const tools = [
      {
        type: "function",
        function: {
          name: "get_weather",
          parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
        },
      },
    ];
    const r = validateRequest(Endpoint.CHAT_COMPLETIONS, chat({ tools, tool_choice: "required" }));
    expect(r.tools).toMatchObject({ choice: { type: "required" }, parallel: true });
    expect(r.features).toEqual([ModelFeature.GRAMMAR]);
    // The functions' documentation is part of the prompt: the bound holds it.
    const plain = validateRequest(Endpoint.CHAT_COMPLETIONS, chat({}));
    expect(r.promptTokenBound).toBeGreaterThan(plain.promptTokenBound + 1024);
    expect(
      validateRequest(Endpoint.CHAT_COMPLETIONS, chat({ tools, tool_choice: "none" })).tools,
    ).toBeUndefined();
    const bad: Array<[Record<string, unknown>, string]> = [
      [
        {
          tools: [
            {
              type: "function",
              function: {
                name: "f",
                parameters: { type: "object", properties: { x: { type: "string", pattern: "(?=a)" } } },
              },
            },
          ],
        },
        "tools[0].function.parameters.properties.x.pattern",
      ],
      [{ tools, tool_choice: { type: "function", function: { name: "g" } } }, "tool_choice.function.name"],
      [{ tools, response_format: { type: "json_object" } }, "response_format"],
      [{ tool_choice: "required" }, "tool_choice"],
    ];
    for (const [extra, param] of bad)
      expect(errorOf(Endpoint.CHAT_COMPLETIONS, chat(extra)).param).toBe(param);
    expect(errorOf(Endpoint.COMPLETIONS, enc({ model: "m", prompt: "x", tools })).param).toBe("tools");
    // Calls and results in the conversation: their pairing is checked at once.
    const call = {
      id: "c1",
      type: "function",
      function: { name: "get_weather", arguments: '{"city":"Oslo"}' },
    };
    const answered = validateRequest(
      Endpoint.CHAT_COMPLETIONS,
      enc({
        model: "m",
        messages: [
          { role: "user", content: "weather?" },
          { role: "assistant", content: null, tool_calls: [call] },
          { role: "tool", tool_call_id: "c1", content: "sunny" },
        ],
      }),
    );
    expect(answered.input).toMatchObject({
      kind: "chat",
      messages: [{}, { toolCalls: [{ id: "c1" }] }, { toolCallId: "c1" }],
    });
    const unanswered = errorOf(
      Endpoint.CHAT_COMPLETIONS,
      enc({
        model: "m",
        messages: [
          { role: "assistant", content: null, tool_calls: [call] },
          { role: "user", content: "and?" },
        ],
      }),
    );
    expect(unanswered.param).toBe("messages[0].tool_calls");
  });

  it("reads logit_bias as the provider will, naming the param of a bad one", () => {
    expect(() =>
      validateRequest(Endpoint.CHAT_COMPLETIONS, chat({ logit_bias: { "42": -100, "7": 3.5 } })),
    ).not.toThrow();
    const bad: unknown[] = [[1], { x: 1 }, { "-1": 1 }, { "01": 1 }, { "5": 101 }, { "5": "big" }];
    for (const logit_bias of bad) {
      const e = errorOf(Endpoint.CHAT_COMPLETIONS, chat({ logit_bias }));
      expect(e.param, JSON.stringify(logit_bias)).toBe("logit_bias");
    }
    const many = Object.fromEntries(Array.from({ length: 1025 }, (_, i) => [String(i), 1]));
    expect(errorOf(Endpoint.CHAT_COMPLETIONS, chat({ logit_bias: many })).message).toMatch(/at most 1024/);
  });

  it("tolerates unknown fields", () => {
    expect(() =>
      validateRequest(Endpoint.CHAT_COMPLETIONS, chat({ frobnicate: true, metadata: { a: 1 } })),
    ).not.toThrow();
  });

  it.each([
    ["not json", "{", null, "invalid_json"],
    ["a JSON array", "[1]", null, "invalid_json"],
  ])("rejects %s", (_name, body, param, code) => {
    const e = errorOf(Endpoint.CHAT_COMPLETIONS, enc(body));
    expect(e.status).toBe(400);
    expect(e.type).toBe("invalid_request_error");
    expect(e.code).toBe(code);
    expect(e.param).toBe(param);
  });

  it.each([
    ["a stray byte", [0xff]],
    ["an overlong encoding", [0xc0, 0x80]],
    ["an encoded surrogate", [0xed, 0xa0, 0x80]],
    ["a truncated sequence", [0xe2, 0x82]],
  ])("refuses a body that is not UTF-8 (%s inside a string) instead of replacing it", (_name, bad) => {
    const [head, tail] = ['{"model":"m","messages":[{"role":"user","content":"hi ', '"}]}'];
    const body = new Uint8Array([
      ...new TextEncoder().encode(head),
      ...bad,
      ...new TextEncoder().encode(tail),
    ]);
    const e = errorOf(Endpoint.CHAT_COMPLETIONS, body);
    expect(e.status).toBe(400);
    expect(e.code).toBe("invalid_json");
  });

  it("refuses a body that starts with a byte order mark, as before", () => {
    const body = new Uint8Array([0xef, 0xbb, 0xbf, ...chat()]);
    expect(errorOf(Endpoint.CHAT_COMPLETIONS, body).code).toBe("invalid_json");
  });

  it("names the model param when it is missing", () => {
    const e = errorOf(Endpoint.CHAT_COMPLETIONS, enc({ messages: [{ role: "user", content: "x" }] }));
    expect(e.toJSON()).toEqual({
      error: {
        message: "You must provide a model parameter.",
        type: "invalid_request_error",
        code: "invalid_request_error",
        param: "model",
      },
    });
  });

  it.each([
    [{ temperature: 2.5 }, "temperature"],
    [{ temperature: "hot" }, "temperature"],
    [{ top_p: 1.5 }, "top_p"],
    [{ top_p: -0.1 }, "top_p"],
    [{ max_tokens: 0 }, "max_tokens"],
    [{ max_tokens: 1.5 }, "max_tokens"],
    [{ max_tokens: 2_000_000 }, "max_tokens"],
    [{ max_completion_tokens: -1 }, "max_completion_tokens"],
    [{ n: 0 }, "n"],
    [{ n: 9 }, "n"],
    [{ stop: ["a", "b", "c", "d", "e"] }, "stop"],
    [{ stop: 5 }, "stop"],
    [{ stream: "yes" }, "stream"],
    [{ stream_options: { include_usage: true } }, "stream_options"],
    [{ stream: true, stream_options: { include_usage: "y" } }, "stream_options.include_usage"],
    [{ presence_penalty: 3 }, "presence_penalty"],
    [{ seed: 1.5 }, "seed"],
    [{ logprobs: "yes" }, "logprobs"],
    [{ top_logprobs: 2 }, "top_logprobs"],
    [{ logprobs: true, top_logprobs: 21 }, "top_logprobs"],
    [{ logprobs: true, top_logprobs: 1.5 }, "top_logprobs"],
    [
      {
        logprobs: true,
        tools: [{ type: "function", function: { name: "f", parameters: { type: "object" } } }],
      },
      "logprobs",
    ],
    [{ messages: [] }, "messages"],
    [{ messages: "hi" }, "messages"],
    [{ messages: [{ role: "wizard", content: "x" }] }, "messages[0].role"],
    [{ messages: [{ role: "user" }] }, "messages[0].content"],
    [
      { messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] },
      "messages[0].content[0].type",
    ],
    [{ model: 42 }, "model"],
  ])("rejects %j naming param %s", (extra, param) => {
    const e = errorOf(Endpoint.CHAT_COMPLETIONS, chat(extra));
    expect(e.status).toBe(400);
    expect(e.param).toBe(param);
    expect(e.message.length).toBeGreaterThan(10);
  });

  it("reads stream options and token limits", () => {
    const r = validateRequest(
      Endpoint.CHAT_COMPLETIONS,
      chat({
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: 50,
        max_completion_tokens: 20,
        n: 2,
      }),
    );
    expect(r).toMatchObject({ stream: true, includeUsage: true, maxTokens: 20, n: 2 });
  });

  it("accepts text content parts and assistant messages without content", () => {
    const r = validateRequest(
      Endpoint.CHAT_COMPLETIONS,
      enc({
        model: "m",
        messages: [
          { role: "user", content: [{ type: "text", text: "abcd".repeat(10) }] },
          { role: "assistant", content: null },
        ],
      }),
    );
    expect(r.promptTokens).toBeGreaterThanOrEqual(10);
  });

  it("validates completions prompts", () => {
    expect(validateRequest(Endpoint.COMPLETIONS, enc({ model: "m", prompt: "once upon" })).model).toBe("m");
    expect(validateRequest(Endpoint.COMPLETIONS, enc({ model: "m", prompt: ["once"] })).model).toBe("m");
    expect(errorOf(Endpoint.COMPLETIONS, enc({ model: "m" })).param).toBe("prompt");
    expect(errorOf(Endpoint.COMPLETIONS, enc({ model: "m", prompt: ["a", "b"] })).message).toContain(
      "Batched",
    );
    expect(errorOf(Endpoint.COMPLETIONS, enc({ model: "m", prompt: [1, 2, 3] })).message).toContain(
      "Token-id",
    );
    expect(errorOf(Endpoint.COMPLETIONS, enc({ model: "m", prompt: "x", echo: true })).param).toBe("echo");
  });
});
