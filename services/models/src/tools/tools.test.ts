import type { LlamaModel } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BodyError } from "../chat/body-error.js";
import { type GenerationInput, readGenerationInput } from "../chat/generation-input.js";
import { grammarAccepts, openVocabularies } from "../structured/grammar-check.test-support.js";
import { FastModelTokenizer } from "../tokenizer/fast-model-tokenizer.js";
import type { ModelTokenizer } from "../tokenizer/model-tokenizer.js";
import { describeVocabulary } from "../tokenizer/vocabulary-description.js";
import { shownToolCalls, toolCallId } from "./call-id.js";
import { toolCallGrammar } from "./grammar.js";
import { splitToolOutput, ToolCallSplitter } from "./parse.js";
import type { ToolCallSyntax } from "./syntax.js";
import { readToolUse, type ToolUse } from "./tool-use.js";
import { toolCallViolation } from "./violation.js";

const TOOLS = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather in a city.",
      parameters: {
        type: "object",
        properties: { city: { type: "string", maxLength: 12 }, unit: { enum: ["c", "f"] } },
        required: ["city"],
        additionalProperties: false,
      },
    },
  },
  { type: "function", function: { name: "now" } },
];
const NAMES = ["get_weather", "now"];

const GENERIC: ToolCallSyntax = {
  sectionPrefix: "",
  prefix: "||call: ",
  paramsPrefix: "(",
  suffix: ")",
  between: undefined,
};
const QWEN: ToolCallSyntax = {
  sectionPrefix: "",
  prefix: '<tool_call>\n{"name": "',
  paramsPrefix: '", "arguments": ',
  suffix: "}\n</tool_call>",
  between: "\n",
};

function bodyError(read: () => unknown): BodyError {
  try {
    read();
  } catch (e) {
    expect(e).toBeInstanceOf(BodyError);
    return e as BodyError;
  }
  throw new Error("expected a BodyError");
}

describe("readToolUse", () => {
  it("reads tools, tool_choice and parallel_tool_calls", () => {
    const auto = readToolUse({ tools: TOOLS }) as ToolUse;
    expect(auto.choice).toEqual({ type: "auto" });
    expect(auto.parallel).toBe(true);
    expect(auto.functions.map((f) => f.name)).toEqual(NAMES);
    // No parameters: an empty object.
    expect(auto.functions[1]?.parameters.root).toMatchObject({ kind: "object", properties: [] });
    expect(readToolUse({ tools: TOOLS, tool_choice: "none" })).toBeUndefined();
    expect(readToolUse({ tools: [] })).toBeUndefined();
    expect(readToolUse({ tools: TOOLS, tool_choice: "required", parallel_tool_calls: false })).toMatchObject({
      choice: { type: "required" },
      parallel: false,
    });
    expect(
      readToolUse({ tools: TOOLS, tool_choice: { type: "function", function: { name: "now" } } })?.choice,
    ).toEqual({ type: "function", name: "now" });
  });

  it.each([
    [{ tools: {} }, "tools"],
    [{ tools: [{ type: "retrieval" }] }, "tools[0].type"],
    [{ tools: [{ type: "function" }] }, "tools[0].function"],
    [{ tools: [{ type: "function", function: { name: "a b" } }] }, "tools[0].function.name"],
    [{ tools: [TOOLS[1], TOOLS[1]] }, "tools[1].function.name"],
    [
      { tools: [{ type: "function", function: { name: "f", parameters: [] } }] },
      "tools[0].function.parameters",
    ],
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
    [
      { tools: [{ type: "function", function: { name: "f", parameters: { type: "string" } } }] },
      "tools[0].function.parameters.type",
    ],
    [
      {
        tools: [
          {
            type: "function",
            function: {
              name: "f",
              strict: true,
              parameters: { type: "object", properties: { a: { type: "string" } } },
            },
          },
        ],
      },
      "tools[0].function.parameters.additionalProperties",
    ],
    [{ tools: TOOLS, tool_choice: "sometimes" }, "tool_choice"],
    [
      { tools: TOOLS, tool_choice: { type: "function", function: { name: "nope" } } },
      "tool_choice.function.name",
    ],
    [{ tool_choice: "required" }, "tool_choice"],
    [{ tools: TOOLS, parallel_tool_calls: "yes" }, "parallel_tool_calls"],
  ])("refuses %j naming %s", (body, param) => {
    expect(bodyError(() => readToolUse(body as Record<string, unknown>)).param).toBe(param);
  });
});

describe("tool messages", () => {
  const call = (id: string, name = "now", args = "{}") => ({
    id,
    type: "function",
    function: { name, arguments: args },
  });
  const read = (messages: unknown[]) => readGenerationInput("chat", { messages });

  it("reads assistant tool calls and the tool messages answering them", () => {
    const input = read([
      { role: "user", content: "time?" },
      {
        role: "assistant",
        content: null,
        tool_calls: [call("a"), call("b", "get_weather", '{"city": "Oslo"}')],
      },
      { role: "tool", tool_call_id: "b", content: "sunny" },
      { role: "tool", tool_call_id: "a", content: [{ type: "text", text: "12:00" }] },
      { role: "assistant", content: "It is noon and sunny." },
    ]) as Extract<GenerationInput, { kind: "chat" }>;
    expect(input.messages[1]).toEqual({
      role: "assistant",
      content: "",
      toolCalls: [
        { id: "a", name: "now", arguments: "{}" },
        { id: "b", name: "get_weather", arguments: '{"city": "Oslo"}' },
      ],
    });
    expect(input.messages[3]).toEqual({ role: "tool", content: "12:00", toolCallId: "a" });
  });

  it.each([
    [
      [
        { role: "user", content: "x" },
        { role: "tool", tool_call_id: "a", content: "r" },
      ],
      "messages[1].tool_call_id",
    ],
    [
      [
        { role: "assistant", content: null, tool_calls: [call("a")] },
        { role: "tool", content: "r" },
      ],
      "messages[1].tool_call_id",
    ],
    [
      [
        { role: "assistant", content: null, tool_calls: [call("a")] },
        { role: "user", content: "r" },
      ],
      "messages[0].tool_calls",
    ],
    [[{ role: "assistant", content: null, tool_calls: [call("a"), call("a")] }], "messages[0].tool_calls"],
    [
      [
        {
          role: "assistant",
          content: null,
          tool_calls: [{ id: "a", function: { name: "f", arguments: {} } }],
        },
      ],
      "messages[0].tool_calls[0].function.arguments",
    ],
    [
      [
        { role: "assistant", content: null, tool_calls: [call("a")] },
        { role: "tool", tool_call_id: "z", content: "r" },
      ],
      "messages[1].tool_call_id",
    ],
  ])("refuses %j naming %s", (messages, param) => {
    expect(bodyError(() => read(messages)).param).toBe(param);
  });
});

describe("ToolCallSplitter", () => {
  const cases: [ToolCallSyntax, string, string[]][] = [
    [GENERIC, 'Let me look.||call: get_weather({"city": "Oslo"})', ["Let me look.", "get_weather"]],
    [GENERIC, "||call: now({})", ["", "now"]],
    [
      QWEN,
      '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "a)}\\"b", "unit": "c"} \n}\n</tool_call>',
      ["", "now", "get_weather"],
    ],
  ];

  it.each(cases)("splits %j output the same whole or in any pieces", (syntax, text, [content, ...names]) => {
    const whole = splitToolOutput(text, syntax, NAMES);
    expect(whole.state).toBe("complete");
    expect(whole.content).toBe(content);
    expect(whole.calls.map((c) => c.name)).toEqual(names);
    for (const c of whole.calls) expect(() => JSON.parse(c.arguments)).not.toThrow();
    for (let cut = 0; cut <= text.length; cut++) {
      // Any prefix is well-formed so far; the deltas of any two pieces add up to the whole.
      expect(splitToolOutput(text.slice(0, cut), syntax, NAMES).state).not.toBe("malformed");
      const splitter = new ToolCallSplitter(syntax, NAMES);
      const deltas = [splitter.push(text.slice(0, cut)), splitter.push(text.slice(cut))];
      const end = splitter.finish();
      deltas.push(end.delta);
      expect(end.output).toEqual(whole);
      expect(deltas.map((d) => d.content).join("")).toBe(whole.content);
      const args = new Map<number, string>();
      for (const d of deltas)
        for (const c of d.calls) args.set(c.index, (args.get(c.index) ?? "") + c.arguments);
      expect([...args.values()]).toEqual(whole.calls.map((c) => c.arguments));
    }
  });

  it("holds back what may begin the calls, and releases it as content when it does not", () => {
    const splitter = new ToolCallSplitter(GENERIC, NAMES);
    expect(splitter.push("a||ca").content).toBe("a");
    expect(splitter.push("t").content).toBe("||cat");
    expect(splitter.push("||").content).toBe("");
    expect(splitter.finish()).toMatchObject({
      delta: { content: "||" },
      output: { state: "text", content: "a||cat||" },
    });
  });

  it.each([
    ["||call: later({})", "a call names no offered function"],
    ["||call: now([])", "a call's arguments are not a JSON object"],
    ["||call: now({}]", "a call's arguments are not followed by the call's end"],
    ["||call: now({}) and more", "text follows the calls"],
  ])("%j is malformed", (text, error) => {
    expect(splitToolOutput(text, GENERIC, NAMES)).toMatchObject({ state: "malformed", error });
  });

  it("judges a finished choice against the tool use", () => {
    const use = readToolUse({ tools: TOOLS, tool_choice: "required" }) as ToolUse;
    const split = (text: string) => splitToolOutput(text, GENERIC, NAMES);
    expect(toolCallViolation(use, split('||call: get_weather({"city": "Oslo"})'), true)).toBeUndefined();
    expect(toolCallViolation(use, split('||call: get_weather({"town": "Oslo"})'), true)).toMatch(
      /get_weather/,
    );
    expect(toolCallViolation(use, split("hello"), true)).toMatch(/requires/);
    expect(toolCallViolation(use, split("||call: now({"), true)).toMatch(/unfinished/);
    // Cut by max_tokens or a stop string: only malformed text is a violation.
    expect(toolCallViolation(use, split("||call: now({"), false)).toBeUndefined();
    expect(toolCallViolation(use, split("||call: nope({})"), false)).toMatch(/offered/);
    const auto = readToolUse({ tools: TOOLS }) as ToolUse;
    expect(toolCallViolation(auto, split("hello"), true)).toBeUndefined();
  });

  it("gives calls ids from the request's hash: the same on both sides, new for every request", () => {
    const a = shownToolCalls("ab".repeat(32), 0, [{ name: "now", arguments: "{}" }]);
    expect(a).toEqual([
      { id: toolCallId("ab".repeat(32), 0, 0), type: "function", name: "now", arguments: "{}" },
    ]);
    expect(a[0]?.id).toMatch(/^call_[A-Za-z0-9_-]{24}$/);
    expect(toolCallId("ab".repeat(32), 0, 1)).not.toBe(a[0]?.id);
    expect(toolCallId("ab".repeat(32), 1, 0)).not.toBe(a[0]?.id);
    expect(toolCallId("cd".repeat(32), 0, 0)).not.toBe(a[0]?.id);
  });
});

describe("on real vocabularies", () => {
  let vocabularies: Awaited<ReturnType<typeof openVocabularies>>;
  const open = async (shape: "tiny" | "tiny-llama"): Promise<ModelTokenizer> => vocabularies.get(shape);

  beforeAll(async () => {
    vocabularies = await openVocabularies(["tiny", "tiny-llama"]);
  });

  afterAll(async () => {
    await vocabularies?.close();
  });

  it("derives each template's call syntax", async () => {
    expect((await open("tiny")).toolSyntax).toEqual(GENERIC);
    // Llama 3.1 closes a call with <|eom_id|>, an end of generation: left out.
    expect((await open("tiny-llama")).toolSyntax).toEqual({
      sectionPrefix: "",
      prefix: "<function=",
      paramsPrefix: ">",
      suffix: "</function>",
      between: undefined,
    });
    expect(describeVocabulary(await open("tiny")).toolSyntax).toEqual(GENERIC);
  });

  const accepts = (model: LlamaModel, grammar: string, text: string): boolean =>
    grammarAccepts(vocabularies.llama, model, grammar, text);

  it("auto: any text without the trigger, then only well-formed calls (llama.cpp's grammar sampler)", async () => {
    const model = (await open("tiny")).model;
    const auto = toolCallGrammar(GENERIC, readToolUse({ tools: TOOLS }) as ToolUse);
    for (const text of [
      "",
      "hello there",
      "a |b ||c ||cal ||call:x ||call",
      "||cal",
      'I will.||call: get_weather({"city": "Oslo"})',
    ]) {
      expect(accepts(model, auto, text), text).toBe(true);
    }
    for (const text of [
      "||call: nope({})",
      '||call: get_weather({"town": "Oslo"})',
      "||call: now({}) and more",
      "||call: now({}) ",
      "||call: now({})||call: now({})",
      "x||call: now(",
    ]) {
      expect(accepts(model, auto, text), text).toBe(false);
    }
    const required = toolCallGrammar(
      GENERIC,
      readToolUse({ tools: TOOLS, tool_choice: "required" }) as ToolUse,
    );
    expect(accepts(model, required, "hello")).toBe(false);
    expect(accepts(model, required, '||call: get_weather({"city": "Oslo", "unit": "f"})')).toBe(true);
  });

  it("parallel calls where the template has them, one call where parallel_tool_calls is false", async () => {
    const model = (await open("tiny")).model;
    const two = `${QWEN.prefix}now", "arguments": {}}\n</tool_call>\n${QWEN.prefix}now", "arguments": {}}\n</tool_call>`;
    const parallel = toolCallGrammar(QWEN, readToolUse({ tools: TOOLS }) as ToolUse);
    const single = toolCallGrammar(
      QWEN,
      readToolUse({ tools: TOOLS, parallel_tool_calls: false }) as ToolUse,
    );
    expect(accepts(model, parallel, two)).toBe(true);
    expect(accepts(model, single, two)).toBe(false);
    expect(splitToolOutput(two, QWEN, NAMES).calls).toHaveLength(2);
  });

  it("renders functions and calls with the template, and the coordinator's port counts it the same", async () => {
    for (const shape of ["tiny", "tiny-llama"] as const) {
      const t = await open(shape);
      const input = readGenerationInput("chat", {
        tools: TOOLS,
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "Weather in Oslo?" },
          {
            role: "assistant",
            content: "Checking.",
            tool_calls: [
              { id: "c1", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } },
            ],
          },
          { role: "tool", tool_call_id: "c1", content: '{"sky": "clear"}' },
        ],
      });
      const text = t.model.detokenize(t.render(input).tokens, true);
      expect(text).toContain("get_weather");
      expect(text).toContain("The weather in a city.");
      // The call as the model wrote it, and its result.
      expect(text).toContain(
        shape === "tiny"
          ? '||call: get_weather({"city":"Oslo"})'
          : '<function=get_weather>{"city":"Oslo"}</function>',
      );
      expect(text).toContain("clear");
      if (shape === "tiny") {
        const fast = FastModelTokenizer.create(describeVocabulary(t));
        expect(fast.countPrompt(input)).toBe(t.countPrompt(input));
        expect(fast.countPrompt(input)).toBe(fast.countRenderedPrompt(input));
      }
    }
  });
});
