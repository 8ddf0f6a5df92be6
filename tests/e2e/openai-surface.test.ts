// The OpenAI surface real clients use, through the whole system: logit_bias, structured outputs and
// function calling (tools) with the unchanged client libraries from npm (the
// official openai SDK, the Vercel AI SDK through @ai-sdk/openai-compatible, LangChain's ChatOpenAI)
// and zod: the coordinator routes them to daemons whose engine decodes under the schema's grammar (the
// llama engine serving `tiny`, the native core serving `tiny-llama`), the random-weight models still
// answer with JSON the schema accepts, and each library's own parsing validates every answer with the
// zod schema it was asked with.

import { join } from "node:path";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { ModelTokenizer } from "@darkbloom/models";
import { verifyEmbeddingsResponse } from "@darkbloom/protocol/verifiable-embeddings";
import { verifyResponse } from "@darkbloom/protocol/verifiable-response";
import { modelPath } from "@darkbloom/provider";
import { tool as langchainTool } from "@langchain/core/tools";
import { ChatOpenAI, OpenAIEmbeddings } from "@langchain/openai";
import { embedMany, generateObject, streamObject, streamText, tool } from "ai";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import OpenAI from "openai";
import { zodFunction, zodResponseFormat } from "openai/helpers/zod";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { z as z3 } from "zod/v3";
import { startTestbed, type Testbed, type TestbedAccount } from "../testbed/index.js";

let testbed: Testbed;
let alice: TestbedAccount;
let client: OpenAI;

/** Every string, array and number bounded (zod's int() is the safe-integer range): answers end. */
const Card = z.object({
  name: z.string().max(8),
  age: z.number().int(),
  stars: z.number().int().min(1).max(5),
  ok: z.boolean(),
  tags: z.array(z.enum(["red", "green"])).max(3),
  nick: z.string().max(5).nullable(),
  at: z.object({ x: z.number() }),
});

/**
 * Strings zod 4 checks with regular expressions, which it writes into the JSON Schema as `pattern`
 * (beside `format`): the grammar writes what each expression matches; and numbers within bounds.
 * Each bounded, so answers end.
 */
const Card4 = z.object({
  id: z.uuid(),
  born: z.iso.date(),
  ip: z.ipv4(),
  phone: z.e164(),
  code: z.string().regex(/^[a-z]{2,5}-\d{1,3}$/),
  score: z.number().min(0).max(1),
  celsius: z.number().gt(-10.5).lt(45),
});

/**
 * The same card in zod 3, for LangChain 0.3 (Node 20's LangChain): it converts zod 4 schemas without
 * their bounds, so the schema it would send is not the one it then parses with.
 */
const Card3 = z3.object({
  name: z3.string().max(8),
  age: z3.number().int(),
  stars: z3.number().int().min(1).max(5),
  ok: z3.boolean(),
  // zod 3 writes these as JSON Schema formats (zod 4 writes a pattern beside each: see Card4).
  born: z3.string().date(),
  seen: z3.string().datetime(),
  id: z3.string().uuid(),
  tags: z3.array(z3.enum(["red", "green"])).max(3),
  nick: z3.string().max(5).nullable(),
  at: z3.object({ x: z3.number() }),
});

const MODELS = ["tiny", "tiny-llama"] as const;

beforeAll(async () => {
  testbed = await startTestbed({
    providers: [{ models: ["tiny", "tiny-embed"] }, { models: ["tiny-llama"], args: ["--engine", "native"] }],
    coordinatorArgs: ["--queue-timeout", "3s"],
  });
  alice = await testbed.createAccount(100_000_000n);
  client = testbed.openai(alice.apiKey);
}, 180_000);

afterAll(async () => {
  await testbed?.stop();
}, 60_000);

/** LangChain's ChatOpenAI against the testbed, sampling at temperature 1 with a seed. */
function langchainChat(model: string, maxTokens: number, seed: number): ChatOpenAI {
  return new ChatOpenAI({
    model,
    apiKey: alice.apiKey,
    configuration: { baseURL: testbed.baseUrl },
    temperature: 1,
    maxTokens,
    maxRetries: 0,
    modelKwargs: { seed },
  });
}

describe("structured outputs with the openai SDK", () => {
  it("chat.completions.parse returns what the zod schema accepts, from both engines", async () => {
    for (const model of MODELS) {
      for (const seed of [1, 2, 3]) {
        const r = await client.chat.completions.parse({
          model,
          messages: [{ role: "user", content: `Describe card ${seed} as JSON.` }],
          response_format: zodResponseFormat(Card, "card"),
          temperature: 1,
          seed,
          max_tokens: 600,
        });
        const choice = r.choices[0]!;
        expect(choice.finish_reason, `${model} seed ${seed}`).toBe("stop");
        // parse() has run zod on the content already; the object is what the schema accepts.
        expect(Card.parse(choice.message.parsed)).toEqual(choice.message.parsed);
        expect(JSON.parse(choice.message.content ?? "")).toEqual(choice.message.parsed);
      }
    }
  });

  it("streams a structured output the SDK's stream helper parses", async () => {
    const stream = client.chat.completions.stream({
      model: "tiny",
      messages: [{ role: "user", content: "A card, streamed." }],
      response_format: zodResponseFormat(Card, "card"),
      temperature: 0.8,
      seed: 11,
      max_tokens: 600,
      stream_options: { include_usage: true },
    });
    let deltas = 0;
    stream.on("content.delta", () => deltas++);
    const final = await stream.finalChatCompletion();
    expect(deltas).toBeGreaterThan(1);
    expect(Card.safeParse(final.choices[0]?.message.parsed).success).toBe(true);
    expect(final.usage?.completion_tokens).toBeGreaterThan(0);
  });

  it("json_object answers are JSON objects", async () => {
    let stopped = 0;
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const r = await client.chat.completions.create({
        model: "tiny-llama",
        messages: [{ role: "user", content: "Any JSON object." }],
        response_format: { type: "json_object" },
        temperature: 1,
        seed,
        max_tokens: 300,
      });
      const content = r.choices[0]?.message.content ?? "";
      expect(content.startsWith("{")).toBe(true);
      if (r.choices[0]?.finish_reason !== "stop") continue; // an object deeper than max_tokens
      stopped++;
      expect(typeof JSON.parse(content)).toBe("object");
    }
    expect(stopped).toBeGreaterThan(0);
  });

  it("a schema the grammar cannot enforce is a BadRequestError naming the keyword", async () => {
    const error = await client.chat.completions
      .create({
        model: "tiny",
        messages: [{ role: "user", content: "x" }],
        response_format: {
          type: "json_schema",
          json_schema: {
            name: "s",
            schema: { type: "object", properties: { d: { type: "string", pattern: "(?=a)" } } },
          },
        },
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error).toMatchObject({
      status: 400,
      param: "response_format.json_schema.schema.properties.d.pattern",
    });
  });
});

describe("structured outputs with the Vercel AI SDK", () => {
  const darkbloom = () =>
    createOpenAICompatible({
      name: "darkbloom",
      baseURL: testbed.baseUrl,
      apiKey: alice.apiKey,
      supportsStructuredOutputs: true,
      includeUsage: true,
    });

  it("generateObject returns what the zod schema accepts, from both engines", async () => {
    for (const model of MODELS) {
      const { object, finishReason, usage } = await generateObject({
        model: darkbloom()(model),
        schema: Card,
        schemaName: "card",
        prompt: "Describe a card.",
        temperature: 1,
        seed: 5,
        maxOutputTokens: 600,
        maxRetries: 0,
      });
      expect(finishReason).toBe("stop");
      expect(Card.parse(object)).toEqual(object);
      expect(usage.outputTokens).toBeGreaterThan(0);
    }
  });

  it("generateObject with zod 4's pattern-checked strings (uuid, iso date, ipv4, e164, regex) and bounded numbers", async () => {
    for (const model of MODELS) {
      for (const seed of [1, 2]) {
        const { object } = await generateObject({
          model: darkbloom()(model),
          schema: Card4,
          prompt: "Describe a device.",
          temperature: 1,
          seed,
          maxOutputTokens: 600,
          maxRetries: 0,
        });
        expect(Card4.parse(object)).toEqual(object);
      }
    }
  });

  it("streamObject streams partial objects and ends with one the schema accepts", async () => {
    const result = streamObject({
      model: darkbloom()("tiny-llama"),
      schema: Card,
      prompt: "Stream a card.",
      temperature: 0.7,
      seed: 9,
      maxOutputTokens: 600,
      maxRetries: 0,
    });
    let partials = 0;
    for await (const _ of result.partialObjectStream) partials++;
    expect(partials).toBeGreaterThan(1);
    expect(Card.safeParse(await result.object).success).toBe(true);
  });

  it("streamText streams plain text with usage", async () => {
    const result = streamText({
      model: darkbloom()("tiny"),
      prompt: "Say anything.",
      temperature: 0,
      maxOutputTokens: 16,
      maxRetries: 0,
    });
    let text = "";
    for await (const delta of result.textStream) text += delta;
    expect(text).toBe(await result.text);
    expect((await result.usage).outputTokens).toBeGreaterThan(0);
  });
});

describe("structured outputs with LangChain", () => {
  const chat = (model: string) => langchainChat(model, 600, 3);

  it("withStructuredOutput (json_schema) returns what the zod schema accepts, from both engines", async () => {
    for (const model of MODELS) {
      const card = await chat(model)
        // Typed as a plain schema object: LangChain's zod typing instantiates too deeply for tsc
        // (TS2589); at run time it sees the zod schema and parses the answer with it.
        .withStructuredOutput(Card3 as unknown as Record<string, unknown>, {
          name: "card",
          method: "jsonSchema",
          strict: true,
        })
        .invoke("Describe a card.");
      expect(Card3.parse(card)).toEqual(card);
    }
  });

  it("streams a chat answer", async () => {
    let text = "";
    let chunks = 0;
    for await (const chunk of await chat("tiny").stream("Say anything.")) {
      text += String(chunk.content);
      chunks++;
    }
    expect(chunks).toBeGreaterThan(1);
    expect(text.length).toBeGreaterThan(0);
  });
});

describe("logit_bias with the openai SDK", () => {
  it("a +100 token is all both engines sample, and -100 bans a token", async () => {
    let checked = 0;
    const llama = await getLlama({
      gpu: false,
      build: "never",
      logLevel: LlamaLogLevel.error,
      maxThreads: 1,
    });
    try {
      for (const [i, model] of MODELS.entries()) {
        const vocabulary = await ModelTokenizer.open(
          llama,
          modelPath(join(testbed.providers[i]!.dataDir, "models"), model),
        );
        try {
          const token = vocabulary.model.tokenize("hello", false)[0] as number;
          const piece = vocabulary.model.detokenize([token as never]);
          const ask = (logit_bias: Record<string, number>) =>
            client.chat.completions.create({
              model,
              messages: [{ role: "user", content: "Say something." }],
              temperature: 0,
              max_tokens: 5,
              logit_bias,
            });
          const forced = await ask({ [token]: 100 });
          expect(forced.choices[0]?.message.content, model).toBe(piece.repeat(5));
          // -100 bans: the token greedy decoding starts with (one whose text is a token of its
          // own, so that its id reads back) no longer comes first.
          for (const content of ["Say something.", "Count to three.", "Name a colour."]) {
            const ask1 = (logit_bias?: Record<string, number>) =>
              client.chat.completions.create({
                model,
                messages: [{ role: "user", content }],
                temperature: 0,
                max_tokens: 1,
                ...(logit_bias ? { logit_bias } : {}),
              });
            const first = (await ask1()).choices[0]?.message.content ?? "";
            const ids = vocabulary.model.tokenize(first, false);
            if (first.includes("\uFFFD") || ids.length !== 1) continue;
            const banned = await ask1({ [ids[0] as number]: -100 });
            expect(banned.choices[0]?.message.content).not.toBe(first);
            checked++;
          }
        } finally {
          await vocabulary.dispose();
        }
      }
    } finally {
      await llama.dispose();
    }
    expect(checked).toBeGreaterThan(0);
  });

  it("a token outside the model's vocabulary is a 400 from the provider", async () => {
    const error = await client.chat.completions
      .create({ model: "tiny", messages: [{ role: "user", content: "x" }], logit_bias: { "99999999": 5 } })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
  });
});

/** A function's parameters, bounded so that calls end. */
const Weather = z.object({ city: z.string().max(12), unit: z.enum(["celsius", "fahrenheit"]) });
const Weather3 = z3.object({ city: z3.string().max(12), unit: z3.enum(["celsius", "fahrenheit"]) });
const WEATHER_TOOL = {
  type: "function" as const,
  function: {
    name: "get_weather",
    description: "The weather in a city.",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 12 }, unit: { enum: ["celsius", "fahrenheit"] } },
      required: ["city", "unit"],
      additionalProperties: false,
    },
  },
};

describe("tools with the openai SDK", () => {
  it("runTools calls the function with arguments zod accepts, and the answer continues the conversation, on both engines", async () => {
    for (const model of MODELS) {
      const called: z.infer<typeof Weather>[] = [];
      const runner = client.chat.completions.runTools({
        model,
        messages: [{ role: "user", content: "What is the weather in Paris?" }],
        tools: [
          zodFunction({
            name: "get_weather",
            description: "The weather in a city.",
            parameters: Weather,
            function: (args: z.infer<typeof Weather>) => {
              called.push(args);
              return { sky: "clear", degrees: 21 };
            },
          }),
        ],
        tool_choice: { type: "function", function: { name: "get_weather" } },
        temperature: 1,
        seed: 4,
        max_tokens: 300,
      });
      const call = await runner.finalFunctionToolCall();
      expect(call?.name).toBe("get_weather");
      expect(called).toHaveLength(1);
      expect(Weather.parse(called[0])).toEqual(called[0]);
      const completion = await runner.finalChatCompletion();
      expect(completion.choices[0]?.finish_reason).toBe("tool_calls");
      expect(completion.choices[0]?.message.content).toBeNull();
      // The conversation goes on with the call and its result, which the template renders and
      // both sides count alike (else the provider would be cut for its prompt count).
      const next = await client.chat.completions.create({
        model,
        messages: runner.messages as OpenAI.ChatCompletionMessageParam[],
        tools: [WEATHER_TOOL],
        temperature: 0,
        max_tokens: 8,
      });
      expect(next.choices[0]?.message.tool_calls ?? []).toEqual([]);
      expect(next.usage?.prompt_tokens).toBeGreaterThan(completion.usage?.prompt_tokens ?? 0);
    }
  });

  it("streams tool calls as OpenAI does: the stream helper assembles calls whose arguments parse", async () => {
    const stream = client.chat.completions.stream({
      model: "tiny",
      messages: [{ role: "user", content: "Weather in Oslo and in Rome?" }],
      tools: [WEATHER_TOOL],
      tool_choice: "required",
      temperature: 1,
      seed: 7,
      max_tokens: 300,
      stream_options: { include_usage: true },
    });
    let argumentDeltas = 0;
    stream.on("tool_calls.function.arguments.delta", () => argumentDeltas++);
    const final = await stream.finalChatCompletion();
    const choice = final.choices[0]!;
    expect(choice.finish_reason).toBe("tool_calls");
    expect(argumentDeltas).toBeGreaterThan(1);
    expect(choice.message.tool_calls?.length).toBeGreaterThan(0);
    for (const call of choice.message.tool_calls ?? []) {
      if (call.type !== "function") throw new Error("a function call was expected");
      expect(call.id).toMatch(/^call_/);
      expect(Weather.parse(JSON.parse(call.function.arguments))).toBeDefined();
    }
    expect(final.usage?.completion_tokens).toBeGreaterThan(0);
  });

  it("the response signature covers the tool calls, streamed and not", async () => {
    for (const stream of [false, true]) {
      const body = JSON.stringify({
        model: "tiny-llama",
        messages: [{ role: "user", content: "Weather?" }],
        tools: [WEATHER_TOOL],
        tool_choice: "required",
        temperature: 1,
        seed: 2,
        max_tokens: 300,
        stream,
      });
      const res = await fetch(`${testbed.baseUrl}/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${alice.apiKey}`, "content-type": "application/json" },
        body,
      });
      expect(res.status).toBe(200);
      const saved = stream ? await res.text() : await res.json();
      const verdict = verifyResponse(saved, { requestBody: body });
      expect(verdict.ok, JSON.stringify(verdict)).toBe(true);
      if (!verdict.ok) continue;
      expect(verdict.response.choices[0]?.toolCalls.length).toBeGreaterThan(0);
      expect(verdict.response.choices[0]?.finishReason).toBe("tool_calls");
    }
  });

  it("a parameter schema the grammar cannot enforce is a BadRequestError naming the keyword", async () => {
    const error = await client.chat.completions
      .create({
        model: "tiny",
        messages: [{ role: "user", content: "x" }],
        tools: [
          {
            type: "function",
            function: {
              name: "f",
              parameters: { type: "object", properties: { d: { type: "string", pattern: "(?=a)" } } },
            },
          },
        ],
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as InstanceType<typeof OpenAI.BadRequestError>).param).toBe(
      "tools[0].function.parameters.properties.d.pattern",
    );
  });
});

describe("tools with the Vercel AI SDK", () => {
  it("streamText with tools streams the call, runs it, and gives its result", async () => {
    const darkbloom = createOpenAICompatible({
      name: "darkbloom",
      baseURL: testbed.baseUrl,
      apiKey: alice.apiKey,
      includeUsage: true,
    });
    for (const model of MODELS) {
      const calls: unknown[] = [];
      const result = streamText({
        model: darkbloom(model),
        prompt: "What is the weather in Paris?",
        tools: {
          get_weather: tool({
            description: "The weather in a city.",
            inputSchema: Weather,
            execute: async (input) => {
              calls.push(input);
              return { sky: "clear" };
            },
          }),
        },
        toolChoice: "required",
        temperature: 1,
        seed: 6,
        maxOutputTokens: 300,
        maxRetries: 0,
      });
      const parts: string[] = [];
      for await (const part of result.fullStream) parts.push(part.type);
      expect(parts).toContain("tool-input-delta");
      expect(parts).toContain("tool-call");
      expect(await result.finishReason).toBe("tool-calls");
      const toolCalls = await result.toolCalls;
      expect(toolCalls.length).toBeGreaterThan(0);
      for (const c of toolCalls) expect(Weather.parse(c.input)).toEqual(c.input);
      expect(calls).toHaveLength(toolCalls.length);
      expect((await result.toolResults).map((r) => r.output)).toEqual(calls.map(() => ({ sky: "clear" })));
    }
  });
});

describe("tools with LangChain", () => {
  // Typed loosely: LangChain's zod typing instantiates too deeply for tsc (TS2589); at run time it
  // sees the zod schema, sends its JSON Schema and parses the call's arguments with it.
  const weather = langchainTool(async () => "clear", {
    name: "get_weather",
    description: "The weather in a city.",
    schema: Weather3 as unknown as Record<string, unknown>,
  });
  const chat = (model: string) => langchainChat(model, 300, 8);

  it("bindTools: the message's tool calls have the zod schema's arguments, from both engines, streamed too", async () => {
    for (const model of MODELS) {
      const bound = chat(model).bindTools([weather], { tool_choice: "required" });
      const message = await bound.invoke("What is the weather in Paris?");
      expect(message.tool_calls?.length).toBeGreaterThan(0);
      for (const c of message.tool_calls ?? []) {
        expect(c.name).toBe("get_weather");
        expect(Weather3.parse(c.args)).toEqual(c.args);
      }
      let chunks = 0;
      let merged: Awaited<ReturnType<typeof bound.invoke>> | undefined;
      for await (const chunk of await bound.stream("And in Rome?")) {
        chunks++;
        merged = merged === undefined ? chunk : merged.concat(chunk);
      }
      expect(chunks).toBeGreaterThan(1);
      expect(merged?.tool_calls?.length).toBeGreaterThan(0);
      for (const c of merged?.tool_calls ?? []) expect(Weather3.parse(c.args)).toEqual(c.args);
    }
  });
});

describe("logprobs with the openai SDK and LangChain (the native core on tiny-llama)", () => {
  const bytesOf = (content: Array<{ bytes: number[] | null }>) =>
    Buffer.concat(content.map((c) => Buffer.from(c.bytes ?? []))).toString("utf8");

  it("chat: each token with its bytes and alternatives, the greedy pick the likeliest, signed", async () => {
    const r = await client.chat.completions.create({
      model: "tiny-llama",
      messages: [{ role: "user", content: "Say something." }],
      temperature: 0,
      max_tokens: 12,
      logprobs: true,
      top_logprobs: 3,
    });
    const choice = r.choices[0]!;
    const content = choice.logprobs?.content ?? [];
    expect(content.length).toBeGreaterThan(0);
    expect(bytesOf(content)).toBe(choice.message.content);
    for (const e of content) {
      expect(e.top_logprobs.length).toBeGreaterThan(0);
      expect(e.top_logprobs.length).toBeLessThanOrEqual(3);
      expect(e.logprob).toBe(e.top_logprobs[0]!.logprob);
      expect(e.logprob).toBeLessThanOrEqual(0);
    }
    expect(verifyResponse(r)).toMatchObject({ ok: true });
    // The SDK's stream helper assembles the same tokens from the deltas.
    const stream = client.chat.completions.stream({
      model: "tiny-llama",
      messages: [{ role: "user", content: "Say something." }],
      temperature: 0,
      max_tokens: 12,
      logprobs: true,
      top_logprobs: 3,
    });
    let events = 0;
    stream.on("logprobs.content.delta", () => events++);
    const final = await stream.finalChatCompletion();
    expect(events).toBeGreaterThan(0);
    expect(final.choices[0]?.logprobs?.content).toEqual(content);
  });

  it("text completions: the legacy tokens, figures and offsets", async () => {
    const r = await client.completions.create({
      model: "tiny-llama",
      prompt: "Once upon a time",
      temperature: 0,
      max_tokens: 10,
      logprobs: 2,
    });
    const lp = r.choices[0]!.logprobs!;
    expect(lp.tokens?.length).toBeGreaterThan(0);
    expect(lp.token_logprobs).toHaveLength(lp.tokens!.length);
    expect(lp.text_offset?.[0]).toBe(0);
    for (const top of lp.top_logprobs ?? []) expect(Object.keys(top).length).toBeLessThanOrEqual(2);
    if (!lp.tokens!.some((t) => t.startsWith("bytes:"))) expect(lp.tokens!.join("")).toBe(r.choices[0]!.text);
    expect(verifyResponse(r)).toMatchObject({ ok: true });
  });

  it("LangChain's ChatOpenAI reads them into response_metadata", async () => {
    const chat = new ChatOpenAI({
      model: "tiny-llama",
      apiKey: alice.apiKey,
      configuration: { baseURL: testbed.baseUrl },
      temperature: 0,
      maxTokens: 8,
      maxRetries: 0,
      logprobs: true,
      topLogprobs: 2,
    });
    const message = await chat.invoke("Say something.");
    const content = message.response_metadata.logprobs?.content as Array<{ bytes: number[] }>;
    expect(content.length).toBeGreaterThan(0);
    expect(bytesOf(content)).toBe(message.content);
  });

  it("a model whose providers report none is a 503 that says so; a bad top_logprobs is a 400", async () => {
    await expect(
      client.chat.completions.create({
        model: "tiny",
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 2,
        logprobs: true,
      }),
    ).rejects.toMatchObject({ status: 503, message: expect.stringMatching(/log-probabilities/) });
    await expect(
      client.chat.completions.create({
        model: "tiny-llama",
        messages: [{ role: "user", content: "hi" }],
        logprobs: true,
        top_logprobs: 21,
      }),
    ).rejects.toMatchObject({ status: 400, param: "top_logprobs" });
  });
});

describe("embeddings: tiny-embed (last-token pooling, EOS appended) on the llama engine", () => {
  const MODEL = "tiny-embed";
  const TEXTS = ["The cat sat on the mat.", "Un chat était assis.", "🐈 on a mat"];
  const norm = (v: readonly number[]) => Math.hypot(...v);
  /** What the inputs count to with the model's tokenizer, as llama.cpp evaluates an embedding input. */
  const inputTokens = async (texts: readonly string[]) => {
    const tokenizer = await testbed.tokenizer(MODEL);
    return texts.reduce((sum, text) => sum + tokenizer.countPrompt({ kind: "embedding", text }), 0);
  };

  it("openai embeddings.create: floats and the SDK's default base64 are the same unit vectors, counted and signed", async () => {
    const floats = await client.embeddings.create({ model: MODEL, input: TEXTS, encoding_format: "float" });
    const base64 = await client.embeddings.create({ model: MODEL, input: TEXTS });
    expect(floats.data.map((d) => d.index)).toEqual([0, 1, 2]);
    expect(base64.data.map((d) => d.embedding)).toEqual(floats.data.map((d) => d.embedding));
    for (const d of floats.data) {
      expect(d.embedding).toHaveLength(128); // tiny-embed's embedding_length
      expect(norm(d.embedding)).toBeCloseTo(1, 5);
    }
    // Deterministic: the same text embeds the same wherever it sits in the batch.
    const alone = await client.embeddings.create({
      model: MODEL,
      input: TEXTS[1] as string,
      encoding_format: "float",
    });
    expect(alone.data[0]?.embedding).toEqual(floats.data[1]?.embedding);
    expect(floats.usage).toEqual({
      prompt_tokens: await inputTokens(TEXTS),
      total_tokens: await inputTokens(TEXTS),
    });
    // The proof verifies from the saved body, in either encoding.
    for (const encoding_format of ["float", "base64"] as const) {
      const body = { model: MODEL, input: TEXTS, encoding_format };
      const raw = await client.embeddings.create(body).asResponse();
      const verdict = verifyEmbeddingsResponse(await raw.text(), { requestBody: JSON.stringify(body) });
      expect(verdict).toMatchObject({ ok: true });
    }
  });

  it("refuses what the model cannot do, by param, through the SDK", async () => {
    const refused = async (body: Parameters<typeof client.embeddings.create>[0]) =>
      client.embeddings.create(body).then(
        () => undefined,
        (e: unknown) => e as InstanceType<typeof OpenAI.BadRequestError>,
      );
    expect((await refused({ model: MODEL, input: "x", dimensions: 64 }))?.param).toBe("dimensions");
    expect((await refused({ model: "tiny", input: "x" }))?.param).toBe("model");
    expect((await refused({ model: MODEL, input: [1, 2, 3] }))?.param).toBe("input");
    // And an embedding model writes no completions.
    const chat = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 4 })
      .then(
        () => undefined,
        (e: unknown) => e as InstanceType<typeof OpenAI.BadRequestError>,
      );
    expect(chat?.param).toBe("model");
  });

  it("AI SDK embedMany and LangChain OpenAIEmbeddings get the same vectors", async () => {
    const reference = await client.embeddings.create({
      model: MODEL,
      input: TEXTS,
      encoding_format: "float",
    });
    const darkbloom = createOpenAICompatible({
      name: "darkbloom",
      baseURL: testbed.baseUrl,
      apiKey: alice.apiKey,
    });
    const { embeddings, usage } = await embedMany({
      model: darkbloom.textEmbeddingModel(MODEL),
      values: TEXTS,
      maxRetries: 0,
    });
    expect(embeddings).toEqual(reference.data.map((d) => d.embedding));
    expect(usage.tokens).toBe(await inputTokens(TEXTS));
    const langchain = new OpenAIEmbeddings({
      model: MODEL,
      apiKey: alice.apiKey,
      configuration: { baseURL: testbed.baseUrl },
      maxRetries: 0,
    });
    expect(await langchain.embedDocuments(TEXTS)).toEqual(reference.data.map((d) => d.embedding));
    expect(await langchain.embedQuery(TEXTS[0] as string)).toEqual(reference.data[0]?.embedding);
  });
});
