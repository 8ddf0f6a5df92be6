// Usage is what the text counts to. With each model's vocabulary in the catalog the coordinator
// counts prompt and completion tokens itself and accepts only exactly that; without one it accepts
// counts within bounds the text sets. Neither may ever trip on an honest engine: the real llama.cpp
// engine on synthesized models (random weights sample control tokens, split characters and stop
// sequences at random) serves a spread of requests, every one completes with the usage it was
// charged, and the provider stays routable.
import { join } from "node:path";
import { choiceCompletionTokens, ModelTokenizer } from "@darkbloom/models";
import { modelPath } from "@darkbloom/provider";
import { readSse } from "@darkbloom/testing";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestbed, type Testbed } from "../testbed/index.js";

const MODELS = ["tiny", "tiny-llama"] as const;

/** A deterministic spread of requests: both models, n up to 3, stop strings, sampling settings. */
function requests(): Record<string, unknown>[] {
  const stops = [undefined, "e", [" ", "\n"], ["th", "a", "."], "ing"];
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < 24; i++) {
    out.push({
      model: i % 3 === 0 ? "tiny-llama" : "tiny",
      messages: [{ role: "user", content: `Request ${i}: écris une histoire 🙂 über ${"x".repeat(i)}` }],
      max_tokens: 40 + 25 * (i % 5),
      n: 1 + (i % 3),
      temperature: [0, 0.8, 1.5, 2][i % 4],
      seed: i,
      stream: i % 2 === 0,
      ...(stops[i % stops.length] !== undefined ? { stop: stops[i % stops.length] } : {}),
      ...(i % 2 === 0 ? { stream_options: { include_usage: true } } : {}),
    });
  }
  return out;
}

interface Served {
  body: Record<string, unknown>;
  texts: string[];
  usage: { prompt_tokens: number; completion_tokens: number };
}

/** Each request's choices as the consumer received them, and the usage it was shown. */
async function serve(testbed: Testbed, apiKey: string): Promise<Served[]> {
  return Promise.all(
    requests().map(async (body) => {
      const res = await testbed.chat(apiKey, body);
      expect(res.status).toBe(200);
      const texts: string[] = Array.from({ length: body.n as number }, () => "");
      if (body.stream) {
        const events = (await readSse(res)).events.filter((e) => e.data !== "[DONE]");
        const parsed = events.map((e) => JSON.parse(e.data));
        expect(parsed.filter((p) => p.error)).toEqual([]);
        for (const p of parsed) for (const c of p.choices ?? []) texts[c.index] += c.delta?.content ?? "";
        const usage = parsed.find((p) => p.usage)?.usage;
        expect(usage).toBeDefined();
        return { body, texts, usage };
      }
      const json = (await res.json()) as {
        error?: unknown;
        choices: { index: number; message: { content: string } }[];
        usage: Served["usage"];
      };
      expect(json.error).toBeUndefined();
      for (const c of json.choices) texts[c.index] = c.message.content;
      return { body, texts, usage: json.usage };
    }),
  );
}

describe.each([
  { vocabularies: true, mode: "counted by the coordinator" },
  { vocabularies: false, mode: "bounded from the text" },
])("metering an honest engine, usage $mode", ({ vocabularies }) => {
  let testbed: Testbed;
  let llama: Llama;
  const counters = new Map<string, ModelTokenizer>();

  beforeAll(async () => {
    testbed = await startTestbed({ providers: [{ models: [...MODELS], maxBatch: 4 }], vocabularies });
    llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
    const dir = join(testbed.providers[0]!.dataDir, "models");
    for (const model of MODELS) counters.set(model, await ModelTokenizer.open(llama, modelPath(dir, model)));
  }, 180_000);

  afterAll(async () => {
    for (const c of counters.values()) await c.dispose();
    await llama?.dispose();
    await testbed?.stop();
  }, 60_000);

  it("accepts the usage the real engine reports, whatever it samples: the count of what was delivered", async () => {
    const { models } = await testbed.admin.listModels({});
    for (const m of models) expect(m.vocabularySha256 !== "").toBe(vocabularies);
    const alice = await testbed.createAccount(100_000_000n);
    const served = await serve(testbed, alice.apiKey);
    for (const { body, texts, usage } of served) {
      const counter = counters.get(body.model as string)!;
      const maxTokens = body.max_tokens as number;
      const counted = texts.reduce(
        (sum, t) => sum + choiceCompletionTokens(counter.countText(t), maxTokens),
        0,
      );
      // The provider reports exactly the count of its text in both modes (it counts with the same
      // tokenizer); with the vocabulary the coordinator checked it to the token.
      expect(usage.completion_tokens).toBe(counted);
      expect(usage.prompt_tokens).toBe(
        counter.countPrompt({ kind: "chat", messages: body.messages as { role: "user"; content: string }[] }),
      );
    }
    expect(served.some((s) => s.usage.completion_tokens > 0)).toBe(true);
    expect(await testbed.routable()).toHaveLength(1);
    await testbed.settled();
    expect((await testbed.verifyLedger()).ok).toBe(true);
  });
});
