import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ModelTokenizer, synthesizeModel } from "@darkbloom/models";
import { ModelFeature } from "@darkbloom/protocol/provider/v1";
import { verifyEmbeddingsResponse } from "@darkbloom/protocol/verifiable-embeddings";
import { newSigningKey, type ScriptedEmbeddings, ScriptedProvider, unitVector } from "@darkbloom/testing";
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
import { EMBEDDINGS_INVALID } from "./embeddings-attempt.js";

// `dimensions` (Matryoshka shortening) where the catalog says the model was trained for it: from
// its minimum up to the model's own length (known from its vocabulary, tiny-embed's 128), the vectors
// held to the length asked for; elsewhere only the model's own length, and nothing where the length
// is not known.

const SHORTENS = "embed-mrl";
const FIXED = "embed-fixed";
const UNKNOWN = "embed-unknown";
let pg: TestPostgres;
let t: TestCoordinator;
let dir: string;
let llama: Llama;
let tokenizer: ModelTokenizer;
const providers: ScriptedProvider[] = [];
const key = newSigningKey();

async function provider(model: string, embeddings: ScriptedEmbeddings): Promise<ScriptedProvider> {
  const p = new ScriptedProvider({
    baseUrl: t.url,
    models: [{ id: model, contextLength: 2048, features: [ModelFeature.EMBEDDINGS] }],
    responseSigningKey: key.privateKey,
    script: () => ({
      tokens: [],
      embeddings: {
        // The counts the coordinator makes with the model's vocabulary.
        inputTokens: (text) => tokenizer.countPrompt({ kind: "embedding", text }),
        ...embeddings,
      },
    }),
  });
  providers.push(p);
  await p.start();
  return p;
}

const embed = (model: string, dimensions: number) =>
  postJson(t.url, "/v1/embeddings", t.apiKey, { model, input: ["alpha", "beta"], dimensions });

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url, { queueTimeoutMs: 500, maxRetries: 0 });
  dir = await mkdtemp(join(tmpdir(), "darkbloom-dimensions-"));
  const file = join(dir, "tiny-embed.gguf");
  await synthesizeModel({ shape: "tiny-embed", seed: 1, outPath: file });
  const price = { inputMicroUsdPerMillion: 0n, outputMicroUsdPerMillion: 0n };
  await t.coordinator.catalog.upsert({ id: SHORTENS, ...price, embeddingMinDimensions: 16 });
  await t.coordinator.catalog.upsert({ id: FIXED, ...price });
  await t.coordinator.catalog.upsert({ id: UNKNOWN, ...price, embeddingMinDimensions: 16 });
  const vocabulary = await vocabularyOf(file);
  await uploadVocabulary(adminClient(t.url), SHORTENS, vocabulary);
  await uploadVocabulary(adminClient(t.url), FIXED, vocabulary);
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
  tokenizer = await ModelTokenizer.open(llama, file);
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
  await rm(dir, { recursive: true, force: true });
});

describe("dimensions", () => {
  it("is served from the catalog's minimum to the model's length where the model shortens", async () => {
    await provider(SHORTENS, { dimensions: 32 });
    const res = await embed(SHORTENS, 32);
    expect(res.status).toBe(200);
    const text = await res.text();
    const json = JSON.parse(text) as { data: Array<{ embedding: number[] }> };
    expect(json.data[0]?.embedding).toEqual(unitVector("alpha", 32));
    expect(verifyEmbeddingsResponse(text)).toMatchObject({ ok: true });
    for (const [dimensions, message] of [
      [8, /from 16 to 128/],
      [129, /from 16 to 128/],
    ] as const) {
      const refused = await embed(SHORTENS, dimensions);
      expect(refused.status).toBe(400);
      const error = ((await readJson(refused)) as { error: { param: string; message: string } }).error;
      expect(error.param).toBe("dimensions");
      expect(error.message).toMatch(message);
    }
  });

  it("a provider that does not shorten as asked is cut and untrusted", async () => {
    const liar = await provider(SHORTENS, { dimensions: 128 });
    const res = await embed(SHORTENS, 32);
    expect(res.status).toBe(502);
    await waitFor(
      () => liar.runtimeStatuses.some((s) => s.reasons.some((r) => r.code === EMBEDDINGS_INVALID)),
      5_000,
      "the liar to be told",
    );
  });

  it("elsewhere only the model's own length; nothing where the length is not known", async () => {
    await provider(FIXED, { dimensions: 128 });
    expect((await embed(FIXED, 128)).status).toBe(200);
    const shortened = await embed(FIXED, 32);
    expect(shortened.status).toBe(400);
    expect(((await readJson(shortened)) as { error: { message: string } }).error.message).toMatch(
      /cannot shorten them/,
    );
    await provider(UNKNOWN, { dimensions: 32 });
    const unknown = await embed(UNKNOWN, 32);
    expect(unknown.status).toBe(400);
    expect(((await readJson(unknown)) as { error: { message: string } }).error.message).toMatch(
      /not known here/,
    );
  });
});
