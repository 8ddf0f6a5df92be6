/**
 * Engine conformance for `tools` (part of engineConformance): on the tiny model, whose ChatML template
 * resolves to node-llama-cpp's generic call syntax (`||call: name(arguments)`), the engine decodes
 * under the calls' grammar and splits its output; with random weights every call is still one of
 * the offered functions with arguments its schema accepts. Not a test file itself.
 */

import { choiceCompletionTokens, type ModelTokenizer } from "@darkbloom/models";
import { readToolUse, splitToolOutput, type ToolUse, toolCallViolation } from "@darkbloom/models/tools";
import { expect, it } from "vitest";
import { rejection, run } from "./conformance.test-support.js";
import type { Engine, GenerationRequest, ModelFile, SamplingOptions } from "./engine.js";

/** Two functions with bounded parameters: calls that must end. */
export const WEATHER_TOOLS = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather in a city.",
      parameters: {
        type: "object",
        properties: {
          city: { type: "string", maxLength: 12 },
          unit: { enum: ["celsius", "fahrenheit"] },
        },
        required: ["city", "unit"],
        additionalProperties: false,
      },
    },
  },
  {
    type: "function",
    function: {
      name: "add",
      parameters: {
        type: "object",
        properties: {
          a: { type: "integer", minimum: 0, maximum: 999 },
          b: { type: "integer", minimum: 0, maximum: 999 },
        },
        required: ["a", "b"],
        additionalProperties: false,
      },
    },
  },
];

export interface ToolsTarget {
  engine(): Engine;
  model(): ModelFile;
  vocabulary(): Promise<ModelTokenizer>;
  req(input: GenerationRequest["input"], sampling: Partial<SamplingOptions>): GenerationRequest;
}

const CHAT = (tools: ToolUse): GenerationRequest["input"] => ({
  kind: "chat",
  messages: [{ role: "user", content: "What is the weather in Paris, and what is 2 + 3?" }],
  tools: WEATHER_TOOLS.map((t) => ({
    name: t.function.name,
    parameters: t.function.parameters,
    ...(t.function.description ? { description: t.function.description } : {}),
  })).filter((t) => tools.functions.some((f) => f.name === t.name)),
});

/** The conversation of a chat input, without its functions. */
function plainMessages(input: GenerationRequest["input"]) {
  if (input.kind !== "chat") throw new Error("a chat input was expected");
  return input.messages;
}

export function toolsConformance(t: ToolsTarget): void {
  it("calls functions under the calls' grammar: offered names, arguments the schemas accept (or refuses tools)", async () => {
    const engine = t.engine();
    const use = (body: Record<string, unknown>) => readToolUse({ tools: WEATHER_TOOLS, ...body }) as ToolUse;
    const required = use({ tool_choice: "required" });
    if (!engine.constrains(t.model())) {
      const refused = await rejection(
        engine.generate(t.req(CHAT(required), { tools: required }), () => {}).done,
      );
      expect(refused).toMatchObject({ code: "invalid_request", httpStatus: 400 });
      return;
    }
    const vocabulary = await t.vocabulary();
    const syntax = vocabulary.toolSyntax;
    expect(syntax).toBeDefined();
    const names = WEATHER_TOOLS.map((w) => w.function.name);
    const named = use({ tool_choice: { type: "function", function: { name: "add" } } });
    const single = use({ tool_choice: "required", parallel_tool_calls: false });
    for (const tools of [required, named, single]) {
      const runs = await Promise.all(
        [1, 2, 3].map((seed) =>
          run(engine, t.req(CHAT(tools), { tools, temperature: 1, seed, maxTokens: 300 })),
        ),
      );
      for (const r of runs) {
        // The engine's split is the one anybody makes of the text with the model's syntax.
        const split = splitToolOutput(r.text, syntax!, names);
        expect(r.result.tools).toEqual({ content: split.content, calls: split.calls });
        expect(r.result.finishReason, r.text).toBe("tool_calls");
        expect(split.content).toBe("");
        expect(toolCallViolation(tools, split, true), r.text).toBeUndefined();
        if (tools === named) expect(new Set(split.calls.map((c) => c.name))).toEqual(new Set(["add"]));
        if (tools === single) expect(split.calls).toHaveLength(1);
        // Billed as text: the count of everything emitted, calls included.
        expect(r.result.completionTokens).toBe(choiceCompletionTokens(vocabulary.countText(r.text), 300));
      }
      // The prompt documents the functions offered.
      expect(vocabulary.countPrompt(CHAT(tools))).toBeGreaterThan(
        vocabulary.countPrompt({ kind: "chat", messages: plainMessages(CHAT(tools)) }),
      );
    }
  });

  it("with tool_choice auto writes text, through the trigger's beginnings, never malformed calls", async () => {
    const engine = t.engine();
    if (!engine.constrains(t.model())) return;
    const vocabulary = await t.vocabulary();
    const syntax = vocabulary.toolSyntax!;
    const auto = readToolUse({ tools: WEATHER_TOOLS }) as ToolUse;
    const names = WEATHER_TOOLS.map((w) => w.function.name);
    // Random weights never write the whole trigger by chance; pushing its tokens up makes runs full of
    // its beginnings ("||c", "||cal"), each of which the grammar must let the text go on after.
    // (That a complete trigger opens only well-formed calls is checked on llama.cpp's grammar sampler
    // itself in @darkbloom/models' tools.test.ts.)
    const trigger = [...new Set(vocabulary.model.tokenize(syntax.prefix, false))].map(
      (token): [number, number] => [token, 12],
    );
    const runs = await Promise.all(
      [1, 2, 3, 4].map((seed) =>
        run(
          engine,
          t.req(CHAT(auto), {
            tools: auto,
            temperature: 1,
            seed,
            maxTokens: 200,
            logitBias: seed % 2 === 0 ? trigger : undefined,
          }),
        ),
      ),
    );
    for (const r of runs) {
      const split = splitToolOutput(r.text, syntax, names);
      expect(split.state, r.text).not.toBe("malformed");
      expect(toolCallViolation(auto, split, r.result.finishReason !== "length"), r.text).toBeUndefined();
      if (r.result.finishReason === "tool_calls") expect(split.state).toBe("complete");
      if (split.state === "text") expect(r.result.tools?.content).toBe(r.text);
    }
  });
}
