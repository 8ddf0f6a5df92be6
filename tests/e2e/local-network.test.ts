// The whole network as `npm start` runs it: embedded PostgreSQL, the coordinator and a provider
// daemon (real llama.cpp engine on a synthesized model) as separate processes, driven by the
// unchanged official openai SDK.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { type LocalNetwork, startLocalNetwork } from "@darkbloom/local-network";
import { choiceCompletionTokens, ModelTokenizer } from "@darkbloom/models";
import { AdminService } from "@darkbloom/protocol/admin/v1";
import { modelPath } from "@darkbloom/provider";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let dir: string;
let network: LocalNetwork;
let client: OpenAI;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-local-"));
  network = await startLocalNetwork({
    port: 0,
    dataDir: dir,
    providers: 1,
    model: "tiny",
    embeddingModel: "tiny-embed",
    log: () => undefined,
  });
  client = new OpenAI({ baseURL: network.baseUrl, apiKey: network.apiKey, maxRetries: 0 });
}, 180_000);

afterAll(async () => {
  await network?.stop();
  await rm(dir, { recursive: true, force: true });
}, 60_000);

describe("the local network", () => {
  it("serves chat completions, whole and streamed, through the coordinator and a provider daemon", async () => {
    const whole = await client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "Hello there" }],
      max_tokens: 8,
      temperature: 0,
    });
    expect(whole.choices[0]?.finish_reason).toBe("length");
    // The coordinator counted the usage with the model's vocabulary (the network uploads it): what
    // the model's tokenizer makes of the prompt and of the text.
    const llama = await getLlama({
      gpu: false,
      build: "never",
      logLevel: LlamaLogLevel.error,
      maxThreads: 1,
    });
    const tokenizer = await ModelTokenizer.open(
      llama,
      modelPath(join(dir, "providers", "0", "models"), "tiny"),
    );
    const counted = {
      prompt_tokens: tokenizer.countPrompt({
        kind: "chat",
        messages: [{ role: "user", content: "Hello there" }],
      }),
      completion_tokens: choiceCompletionTokens(
        tokenizer.countText(whole.choices[0]?.message.content ?? ""),
        8,
      ),
    };
    await tokenizer.dispose();
    await llama.dispose();
    expect(whole.usage).toMatchObject(counted);

    // Greedy decoding is deterministic: the same request streamed yields the same text.
    const stream = await client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "Hello there" }],
      max_tokens: 8,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(whole.choices[0]?.message.content);
    expect(usage).toMatchObject(counted);
  });

  it("serves embeddings of the embedding model beside it, counted with its vocabulary", async () => {
    const r = await client.embeddings.create({ model: "tiny-embed", input: ["one", "two words"] });
    expect(r.data.map((d) => d.embedding.length)).toEqual([128, 128]);
    expect(Math.hypot(...(r.data[0]?.embedding ?? []))).toBeCloseTo(1, 5);
    expect(r.usage.prompt_tokens).toBeGreaterThanOrEqual(4);
  });

  it("rejects a prompt over the context with context_length_exceeded and lists the model", async () => {
    const e = await client.chat.completions
      .create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 1_000_000 })
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(OpenAI.BadRequestError);
    expect((e as InstanceType<typeof OpenAI.BadRequestError>).code).toBe("context_length_exceeded");
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids).toContain("tiny");
  });

  it("bills the demo account and verifies the ledger", async () => {
    const admin = createClient(
      AdminService,
      createConnectTransport({ baseUrl: network.baseUrl.replace(/\/v1$/, ""), httpVersion: "1.1" }),
    );
    const headers = { authorization: `Bearer ${network.adminKey}` };
    const accounts = await admin.listAccounts({}, { headers });
    const demo = accounts.accounts.find((a) => a.name === "demo");
    expect(demo).toBeDefined();
    expect(demo?.balanceMicroUsd).toBeLessThan(100_000_000n);
    const report = await admin.verifyLedger({}, { headers });
    expect(report.discrepancies).toEqual([]);
    expect(report.ok).toBe(true);
  });
});
