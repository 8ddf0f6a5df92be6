import {
  startTestCoordinator,
  startTestPostgres,
  type TestCoordinator,
  type TestPostgres,
} from "@darkbloom/coordinator/testing";
import { ScriptedProvider } from "@darkbloom/testing";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// The unchanged official OpenAI SDK against the coordinator, with a protocol-speaking provider.
let pg: TestPostgres;
let t: TestCoordinator;
let provider: ScriptedProvider;
let client: OpenAI;

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url);
  provider = new ScriptedProvider({
    baseUrl: t.url,
    models: [{ id: "tiny", contextLength: 4096 }],
    script: () => ({ tokens: ["Hello", ",", " world", "!"] }),
  });
  await provider.start();
  client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: t.apiKey, maxRetries: 0 });
});
afterAll(async () => {
  await provider?.stop();
  await t?.close();
  await pg?.stop();
});

describe("the official openai SDK", () => {
  it("creates a chat completion", async () => {
    const r = await client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
    });
    expect(r.choices[0]?.message.content).toBe("Hello, world!");
    expect(r.choices[0]?.finish_reason).toBe("stop");
    expect(r.usage?.completion_tokens).toBe(4);
  });

  it("streams a chat completion with usage", async () => {
    const stream = await client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe("Hello, world!");
    expect(usage?.total_tokens).toBeGreaterThan(4);
  });

  it("creates and streams text completions", async () => {
    const r = await client.completions.create({ model: "tiny", prompt: "Say", max_tokens: 2 });
    expect(r.choices[0]?.text).toBe("Hello,");
    expect(r.choices[0]?.finish_reason).toBe("length");
    let text = "";
    for await (const c of await client.completions.create({ model: "tiny", prompt: "Say", stream: true })) {
      text += c.choices[0]?.text ?? "";
    }
    expect(text).toBe("Hello, world!");
  });

  it("lists models", async () => {
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids).toContain("tiny");
  });

  it("surfaces errors as typed SDK errors with code and param", async () => {
    const notFound = await client.chat.completions
      .create({ model: "missing", messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(notFound).toBeInstanceOf(OpenAI.NotFoundError);
    expect((notFound as InstanceType<typeof OpenAI.NotFoundError>).code).toBe("model_not_found");
    expect((notFound as InstanceType<typeof OpenAI.NotFoundError>).param).toBe("model");
    const unauthorized = await new OpenAI({
      baseURL: `${t.url}/v1`,
      apiKey: "dbk_wrong",
      maxRetries: 0,
    }).chat.completions
      .create({ model: "tiny", messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(unauthorized).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((unauthorized as InstanceType<typeof OpenAI.AuthenticationError>).code).toBe("invalid_api_key");
    const bad = await client.chat.completions
      .create({ model: "tiny", messages: [{ role: "user", content: "hi" }], temperature: 5 })
      .catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
    expect((bad as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("temperature");
  });
});
