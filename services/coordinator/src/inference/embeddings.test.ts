import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { InferenceService } from "@darkbloom/protocol/inference/v1";
import { ModelFeature } from "@darkbloom/protocol/provider/v1";
import { embeddingFromBytes, verifyEmbeddingsResponse } from "@darkbloom/protocol/verifiable-embeddings";
import {
  newSigningKey,
  type ReceivedRequest,
  type Script,
  type ScriptedEmbeddings,
  ScriptedProvider,
  unitVector,
} from "@darkbloom/testing";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { settledReservation } from "../testing/ledger-queries.js";
import {
  postJson,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
  waitFor,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { EMBEDDINGS_INVALID } from "./embeddings-attempt.js";

// Embeddings through the coordinator with scripted providers: OpenAI's response shape in both
// encodings, the signature over the vectors shown, the inputs' tokens billed, refusals before
// anything is reserved, and providers whose embeddings are not what was asked for cut and untrusted
// while the request is served by another.

const MODEL = "embed";
const PRICE_IN = 2_000_000n; // µUSD per million input tokens: 2 µUSD a token
let server: TestPostgres;
let t: TestCoordinator;
let pool: pg.Pool;
const providers: ScriptedProvider[] = [];
const key = newSigningKey();

async function provider(
  embeddings: ScriptedEmbeddings = {},
  options: { features?: ModelFeature[]; script?: Partial<Script> } = {},
): Promise<ScriptedProvider> {
  const p = new ScriptedProvider({
    baseUrl: t.url,
    models: [{ id: MODEL, contextLength: 2048, features: options.features ?? [ModelFeature.EMBEDDINGS] }],
    responseSigningKey: key.privateKey,
    script: (_r: ReceivedRequest) => ({ tokens: [], embeddings, ...options.script }),
  });
  providers.push(p);
  await p.start();
  return p;
}

const reasonCodes = (p: ScriptedProvider) => p.runtimeStatuses.flatMap((s) => s.reasons.map((r) => r.code));

beforeAll(async () => {
  server = await startTestPostgres();
  t = await startTestCoordinator(server.url, { queueTimeoutMs: 500, maxRetries: 1 });
  await t.coordinator.catalog.upsert({
    id: MODEL,
    inputMicroUsdPerMillion: PRICE_IN,
    outputMicroUsdPerMillion: 0n,
  });
  pool = new pg.Pool({ connectionString: t.coordinator.databaseUrl });
}, 120_000);
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.stop().catch(() => undefined)));
  await waitFor(() => t.coordinator.registry.size === 0, 5_000, "providers to leave");
});
afterAll(async () => {
  await pool?.end();
  await t?.close();
  await server?.stop();
});

type EmbeddingsJson = {
  object: string;
  data: Array<{ object: string; index: number; embedding: number[] | string }>;
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
  darkbloom: { provider_id: string; signature: string | null };
};

describe("POST /v1/embeddings", () => {
  it("answers in OpenAI's shape, signed, and bills the inputs' tokens", async () => {
    await provider({ dimensions: 16, inputTokens: (text) => text.length });
    const body = { model: MODEL, input: ["alpha", "beta gamma"] };
    const res = await postJson(t.url, "/v1/embeddings", t.apiKey, body);
    expect(res.status).toBe(200);
    expect(res.headers.get("x-provider-id")).toBeTruthy();
    const text = await res.text();
    const json = JSON.parse(text) as EmbeddingsJson;
    expect(json).toMatchObject({
      object: "list",
      model: MODEL,
      usage: { prompt_tokens: 15, total_tokens: 15 },
    });
    expect(json.data.map((d) => [d.object, d.index])).toEqual([
      ["embedding", 0],
      ["embedding", 1],
    ]);
    expect(json.data[0]?.embedding).toEqual(unitVector("alpha", 16));
    expect(json.data[1]?.embedding).toEqual(unitVector("beta gamma", 16));
    // The proof verifies from the response alone, pinned to the provider's key.
    const verdict = verifyEmbeddingsResponse(text, {
      requestBody: JSON.stringify(body),
      signingKey: Buffer.from(key.publicKey).toString("base64"),
    });
    expect(verdict).toMatchObject({ ok: true, pinned: true });
    // A changed value fails it.
    const tampered = JSON.parse(text) as EmbeddingsJson;
    (tampered.data[1]?.embedding as number[])[3] = 0.5;
    expect(verifyEmbeddingsResponse(tampered)).toMatchObject({ ok: false });
    const row = await settledReservation(pool, res.headers.get("x-request-id") ?? "");
    // 15 tokens at 2 µUSD is under the minimum charge of 100 µUSD.
    expect(row).toMatchObject({
      outcome: "completed",
      charged: "100",
      prompt_tokens: 15,
      completion_tokens: 0,
    });
  });

  it("sends base64 of the little-endian binary32 values when asked, the same vectors", async () => {
    await provider({ dimensions: 8 });
    const res = await postJson(t.url, "/v1/embeddings", t.apiKey, {
      model: MODEL,
      input: "delta",
      encoding_format: "base64",
    });
    expect(res.status).toBe(200);
    const json = (await readJson(res)) as EmbeddingsJson;
    const bytes = Buffer.from(json.data[0]?.embedding as string, "base64");
    expect(Array.from(embeddingFromBytes(bytes))).toEqual(unitVector("delta", 8));
    expect(verifyEmbeddingsResponse(json)).toMatchObject({ ok: true, pinned: false });
  });

  it("refuses bad requests by their param before anything is reserved", async () => {
    await provider();
    const reservations = async () =>
      (await pool.query("SELECT count(*)::int AS n FROM reservations")).rows[0].n as number;
    const before = await reservations();
    const cases: Array<[Record<string, unknown>, number, string | null]> = [
      [{ model: MODEL }, 400, "input"],
      [{ model: MODEL, input: "" }, 400, "input"],
      [{ model: MODEL, input: [] }, 400, "input"],
      [{ model: MODEL, input: ["a", 3] }, 400, "input[1]"],
      [{ model: MODEL, input: [1, 2, 3] }, 400, "input"],
      [{ model: MODEL, input: [[1, 2]] }, 400, "input"],
      [{ model: MODEL, input: Array.from({ length: 2049 }, () => "x") }, 400, "input"],
      [{ model: MODEL, input: "a", encoding_format: "int8" }, 400, "encoding_format"],
      [{ model: MODEL, input: "a", dimensions: 0 }, 400, "dimensions"],
      [{ model: MODEL, input: "a", user: 7 }, 400, "user"],
      [{ input: "a" }, 400, "model"],
      [{ model: "nope", input: "a" }, 404, "model"],
    ];
    for (const [body, status, param] of cases) {
      const res = await postJson(t.url, "/v1/embeddings", t.apiKey, body);
      const json = (await readJson(res)) as { error: { param: string | null; type: string } };
      expect([res.status, json.error.param], JSON.stringify(body).slice(0, 80)).toEqual([status, param]);
    }
    expect(await reservations()).toBe(before);
  });

  it("routes only to providers that compute the model's embeddings", async () => {
    await provider({}, { features: [] });
    const res = await postJson(t.url, "/v1/embeddings", t.apiKey, { model: MODEL, input: "a" });
    expect(res.status).toBe(503);
    const json = (await readJson(res)) as { error: { message: string } };
    expect(json.error.message).toContain("computes its embeddings");
  });

  it.each<[string, ScriptedEmbeddings]>([
    ["one embedding short", { count: 1 }],
    ["vectors of two lengths", { vector: (text, i) => unitVector(text, i === 0 ? 8 : 9) }],
    ["a vector that is not unit length", { vector: (text) => unitVector(text, 8).map((v) => v * 2) }],
    ["a value that is not finite", { vector: (text) => [Number.NaN, ...unitVector(text, 7)] }],
    ["an input of no tokens", { inputTokens: () => 0 }],
    ["an input of more tokens than its bytes allow", { inputTokens: () => 1_000 }],
    ["a usage that is not the inputs' sum", { promptTokens: 1 }],
  ])("cuts and untrusts a provider that sends %s; another serves the request", async (_what, lie) => {
    const liar = await provider(lie);
    const res1 = await postJson(t.url, "/v1/embeddings", t.apiKey, { model: MODEL, input: ["one", "two"] });
    // With only the liar connected the request fails once it is cut (nothing was shown).
    expect(res1.status).toBe(502);
    await waitFor(() => reasonCodes(liar).includes(EMBEDDINGS_INVALID), 5_000, "the liar to be told");
    await provider();
    const res2 = await postJson(t.url, "/v1/embeddings", t.apiKey, { model: MODEL, input: ["one", "two"] });
    expect(res2.status).toBe(200);
    const row = await settledReservation(pool, res1.headers.get("x-request-id") ?? "");
    expect(row).toMatchObject({ charged: "0" });
  });

  it("refuses a signature that does not cover the vectors shown", async () => {
    const forger = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: MODEL, features: [ModelFeature.EMBEDDINGS] }],
      responseSigningKey: key.privateKey,
      misbehave: { forgeSignature: "response_hash" },
      script: () => ({ tokens: [] }),
    });
    providers.push(forger);
    await forger.start();
    const res = await postJson(t.url, "/v1/embeddings", t.apiKey, { model: MODEL, input: "a" });
    expect(res.status).toBe(502);
    await waitFor(
      () => reasonCodes(forger).includes("response_hash_mismatch"),
      5_000,
      "the forger to be told",
    );
  });

  it("passes a provider's refusal through with the input as its param", async () => {
    await provider(
      {},
      {
        script: {
          fail: {
            when: "before_first_token",
            error: {
              httpStatus: 400,
              code: "context_length_exceeded",
              message: "too long",
              retryable: false,
            },
          },
        },
      },
    );
    const res = await postJson(t.url, "/v1/embeddings", t.apiKey, { model: MODEL, input: "a" });
    expect(res.status).toBe(400);
    expect(((await readJson(res)) as { error: { param: string } }).error.param).toBe("input");
  });

  it("serves the typed Embed call", async () => {
    await provider({ dimensions: 4 });
    const client = createClient(InferenceService, createGrpcTransport({ baseUrl: t.url }));
    const r = await client.embed(
      { model: MODEL, inputs: ["x", "yz"] },
      { headers: { authorization: `Bearer ${t.apiKey}` } },
    );
    expect(r.embeddings.map((e) => [e.index, e.values])).toEqual([
      [0, unitVector("x", 4)],
      [1, unitVector("yz", 4)],
    ]);
    expect(r.usage).toMatchObject({ promptTokens: 6, completionTokens: 0, totalTokens: 6 });
    expect(r.darkbloom?.version).toBe(1);
    expect(r.darkbloom?.signature.byteLength).toBeGreaterThan(0);
  });
});
