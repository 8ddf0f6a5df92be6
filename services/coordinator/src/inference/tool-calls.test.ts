import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ModelTokenizer, readGenerationInput, synthesizeModel } from "@darkbloom/models";
import { toolCallId } from "@darkbloom/models/tools";
import { InferenceService } from "@darkbloom/protocol/inference/v1";
import { ModelFeature } from "@darkbloom/protocol/provider/v1";
import { hex, sha256 } from "@darkbloom/protocol/verifiable-response";
import { type ReceivedRequest, readSse, ScriptedProvider } from "@darkbloom/testing";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { uploadVocabulary, vocabularyOf } from "../catalog/vocabulary-upload.js";
import {
  adminClient,
  postJson,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
  waitFor,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { TOOL_CALLS_INVALID } from "./tool-calls.js";

// Tools through the coordinator, with providers scripted to send what a model writes (the tiny
// model's ChatML template calls functions as `||call: name(arguments)`): the calls shown as OpenAI
// shows them, streamed and not, ids derived from the request, usage counted over the text as
// written; and a provider whose calls the request's tools do not allow is cut and untrusted.

const TOOLS = [
  {
    type: "function",
    function: {
      name: "get_weather",
      parameters: {
        type: "object",
        properties: { city: { type: "string" }, unit: { enum: ["c", "f"] } },
        required: ["city"],
        additionalProperties: false,
      },
    },
  },
];
const request = (extra: Record<string, unknown> = {}) => ({
  model: "tools",
  messages: [{ role: "user", content: "Weather in Oslo?" }],
  tools: TOOLS,
  ...extra,
});
const CALL = ["Checking. ", "||call: get", '_weather({"city": ', '"Oslo", "unit": "c"})'];

let pg: TestPostgres;
let t: TestCoordinator;
let dir: string;
let llama: Llama;
let tokenizer: ModelTokenizer;
const providers: ScriptedProvider[] = [];

/** A provider that sends `tokens` as the model's text, reporting the usage the coordinator counts. */
const provider = async (tokens: string[]) => {
  const p = new ScriptedProvider({
    baseUrl: t.url,
    models: [{ id: "tools", contextLength: 4096, features: [ModelFeature.GRAMMAR] }],
    script: (r: ReceivedRequest) => ({
      tokens,
      promptTokens: tokenizer.countPrompt(readGenerationInput("chat", r.body as Record<string, unknown>)),
      completionTokens: tokenizer.countText(tokens.join("")),
    }),
  });
  providers.push(p);
  await p.start();
  return p;
};
const reasonCodes = (p: ScriptedProvider) => p.runtimeStatuses.flatMap((s) => s.reasons.map((r) => r.code));

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url, { queueTimeoutMs: 500, maxRetries: 0 });
  dir = await mkdtemp(join(tmpdir(), "darkbloom-tool-calls-"));
  const model = join(dir, "tiny.gguf");
  await synthesizeModel({ shape: "tiny", seed: 3, outPath: model });
  await t.coordinator.catalog.upsert({
    id: "tools",
    inputMicroUsdPerMillion: 0n,
    outputMicroUsdPerMillion: 0n,
  });
  await uploadVocabulary(adminClient(t.url), "tools", await vocabularyOf(model));
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
  tokenizer = await ModelTokenizer.open(llama, model);
}, 120_000);
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.stop().catch(() => undefined)));
  await waitFor(() => t.coordinator.registry.size === 0, 5_000, "providers to leave");
});
afterAll(async () => {
  await tokenizer?.dispose();
  await llama?.dispose();
  await t?.close();
  await pg?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("tools through the coordinator", () => {
  it("shows the content before the calls and the calls, with ids from the request's hash", async () => {
    await provider(CALL);
    const body = request();
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, body);
    expect(res.status).toBe(200);
    const json = (await readJson(res)) as {
      choices: Array<{ message: Record<string, unknown>; finish_reason: string }>;
      usage: { completion_tokens: number };
    };
    const id = toolCallId(hex(sha256(new TextEncoder().encode(JSON.stringify(body)))), 0, 0);
    expect(json.choices[0]).toMatchObject({
      finish_reason: "tool_calls",
      message: {
        role: "assistant",
        content: "Checking. ",
        tool_calls: [
          {
            id,
            type: "function",
            function: { name: "get_weather", arguments: '{"city": "Oslo", "unit": "c"}' },
          },
        ],
      },
    });
    // Usage is the text as the model wrote it, calls included.
    expect(json.usage.completion_tokens).toBe(tokenizer.countText(CALL.join("")));
  });

  it("streams the calls as OpenAI does, holding back what may begin them", async () => {
    await provider(["I will ", "|", "|call: get_weather(", '{"city": "Ro', 'me"})']);
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, request({ stream: true }));
    expect(res.status).toBe(200);
    const chunks = (await readSse(res)).events
      .map((e) => e.data)
      .filter((d) => d !== "[DONE]")
      .map(
        (d) => JSON.parse(d) as { choices: Array<{ delta: Record<string, unknown>; finish_reason: string }> },
      )
      .flatMap((c) => c.choices);
    const deltas = chunks.map((c) => c.delta);
    // "|" could have begun the calls: it never reached the content.
    expect(deltas.map((d) => d.content ?? "").join("")).toBe("I will ");
    const calls = deltas.flatMap((d) => (d.tool_calls as Array<Record<string, unknown>> | undefined) ?? []);
    expect(calls[0]).toMatchObject({
      index: 0,
      type: "function",
      function: { name: "get_weather", arguments: "" },
    });
    expect(calls[0]?.id).toMatch(/^call_/);
    expect(calls.map((c) => (c.function as { arguments: string }).arguments).join("")).toBe(
      '{"city": "Rome"}',
    );
    expect(chunks.at(-1)?.finish_reason).toBe("tool_calls");
  });

  it("cuts and untrusts a provider whose calls the tools do not allow", async () => {
    for (const tokens of [
      ['||call: delete_everything({"city": "Oslo"})'],
      ['||call: get_weather({"town": "Oslo"})'],
      ['||call: get_weather({"city": "Oslo"}) and then some'],
    ]) {
      const liar = await provider(tokens);
      const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, request());
      expect(res.status, tokens[0]).toBe(502);
      expect(await readJson(res)).toMatchObject({
        error: { type: "provider_error", message: expect.stringMatching(TOOL_CALLS_INVALID) },
      });
      await expect.poll(() => reasonCodes(liar)).toContain(TOOL_CALLS_INVALID);
      await liar.stop();
      await waitFor(() => t.coordinator.registry.size === 0, 5_000, "the liar to leave");
    }
  });

  it("the typed Connect service takes tools and the conversation's calls, and returns calls, unary and streamed", async () => {
    const p = await provider(CALL);
    const client = createClient(InferenceService, createGrpcTransport({ baseUrl: t.url }));
    const headers = { authorization: `Bearer ${t.apiKey}` };
    const call = {
      model: "tools",
      messages: [
        { role: "user", content: "Weather in Oslo?" },
        { role: "assistant", toolCalls: [{ id: "c0", name: "get_weather", arguments: '{"city": "Oslo"}' }] },
        { role: "tool", toolCallId: "c0", content: '{"sky": "grey"}' },
        { role: "user", content: "And again?" },
      ],
      tools: [{ name: "get_weather", parameters: TOOLS[0]!.function.parameters }],
      toolChoice: { choice: { case: "mode" as const, value: "required" } },
      parallelToolCalls: false,
    };
    const whole = await client.createChatCompletion(call, { headers });
    expect(whole.choices[0]).toMatchObject({
      finishReason: "tool_calls",
      message: {
        content: "Checking. ",
        toolCalls: [{ name: "get_weather", arguments: '{"city": "Oslo", "unit": "c"}' }],
      },
    });
    // The JSON body the coordinator built carries it all, in OpenAI's shape.
    const body = JSON.parse(Buffer.from(whole.darkbloom?.requestBody ?? []).toString());
    expect(body).toMatchObject({
      tool_choice: "required",
      parallel_tool_calls: false,
      tools: [{ type: "function", function: { name: "get_weather" } }],
      messages: [
        {},
        { role: "assistant", content: null, tool_calls: [{ id: "c0", type: "function" }] },
        { role: "tool", tool_call_id: "c0" },
        {},
      ],
    });
    expect(whole.choices[0]?.message?.toolCalls[0]?.id).toBe(
      toolCallId(hex(sha256(whole.darkbloom?.requestBody ?? new Uint8Array())), 0, 0),
    );
    let args = "";
    let name = "";
    let finish = "";
    for await (const d of client.streamChatCompletion(call, { headers })) {
      for (const c of d.toolCalls) {
        name += c.name;
        args += c.arguments;
      }
      if (d.finishReason) finish = d.finishReason;
    }
    expect({ name, args, finish }).toEqual({
      name: "get_weather",
      args: '{"city": "Oslo", "unit": "c"}',
      finish: "tool_calls",
    });
    expect(p.received).toHaveLength(2);
  });

  it("refuses tools for a model whose vocabulary the coordinator does not have, naming the param", async () => {
    const p = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "plain", contextLength: 4096, features: [ModelFeature.GRAMMAR] }],
      script: () => ({ tokens: CALL }),
    });
    providers.push(p);
    await p.start();
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, request({ model: "plain" }));
    expect(res.status).toBe(400);
    expect(await readJson(res)).toMatchObject({
      error: { type: "invalid_request_error", param: "tools", message: expect.stringMatching(/vocabulary/) },
    });
    expect(p.received).toHaveLength(0);
  });
});
