/**
 * POST /v1/embeddings through the daemon's link, end to end on its side: a stand-in coordinator
 * (fake-coordinator.test-support.ts) sends sealed Endpoint.EMBEDDINGS requests to a ProviderLink
 * serving the synthesized tiny-embed model with the real llama engine (llama.cpp on the CPU), and
 * reads back the sealed chunks and the signed completion as the coordinator would.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ModelTokenizer, synthesizeModel } from "@darkbloom/models";
import {
  type ConnectRequest,
  Endpoint,
  type InferenceComplete,
  type InferenceError,
  ModelFeature,
} from "@darkbloom/protocol/provider/v1";
import { BoxKeyPair } from "@darkbloom/protocol/sealed-box";
import {
  EMBEDDINGS_SIGNATURE_VERSION,
  embeddingFromBytes,
  embeddingsSha256,
  verifyEmbeddingsResponse,
  verifyEmbeddingsSignature,
} from "@darkbloom/protocol/verifiable-embeddings";
import { hex } from "@darkbloom/protocol/verifiable-response";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { readModelFile } from "../config/model-inventory.js";
import { tinyModel } from "../engine/conformance.test-support.js";
import type { Engine, ModelFile } from "../engine/engine.js";
import { LlamaEngine } from "../engine/llama/llama-engine.js";
import { describeHardware } from "../machine/hardware.js";
import { ScriptedEngine } from "../testing/scripted-engine.js";
import { SoftwareSigner } from "../trust/software-signer.js";
import { FAKE_PROVIDER_ID, FakeCoordinator } from "./fake-coordinator.test-support.js";
import { ProviderLink } from "./link.js";

let dir: string;
let embed: ModelFile;
let tiny: ModelFile;
let engine: LlamaEngine;
let llama: Llama;
let counter: ModelTokenizer;
let coordinator: FakeCoordinator;
const links: ProviderLink[] = [];
const signer = SoftwareSigner.ephemeral();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-link-embed-"));
  const path = join(dir, "tiny-embed.gguf");
  await synthesizeModel({ shape: "tiny-embed", seed: 1, outPath: path });
  embed = await readModelFile(path);
  tiny = await tinyModel(dir);
  engine = new LlamaEngine({
    maxBatch: 2,
    maxContext: 256,
    threads: 1,
    prefillChunk: 64,
    idleTimeoutMinutes: 0,
    gpu: false,
    validator: false,
  });
  await engine.load(embed);
  await engine.load(tiny);
  // What the coordinator counts an input with: the same tokenizer over the same file's vocabulary.
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
  counter = await ModelTokenizer.open(llama, embed.path);
});

afterAll(async () => {
  await engine?.close();
  await counter?.dispose();
  await llama?.dispose();
  await rm(dir, { recursive: true, force: true });
});

afterEach(async () => {
  await Promise.all(links.splice(0).map((l) => l.close()));
  await coordinator?.close();
});

async function connect(
  served: Engine = engine,
  models: ModelFile[] = [embed, tiny],
  maxContext = 256,
): Promise<{ link: ProviderLink; key: BoxKeyPair }> {
  coordinator = await FakeCoordinator.start();
  const key = BoxKeyPair.generate();
  const link = new ProviderLink({
    coordinatorUrl: coordinator.url,
    engine: served,
    models,
    machineId: `embed-${randomBytes(6).toString("hex")}`,
    encryptionKey: key,
    responseSigner: signer,
    daemonVersion: "0.1.0",
    hardware: describeHardware(),
    knobs: { kvBits: 0, maxContext, maxBatch: 2, idleTimeoutMinutes: 0, threads: 1 },
    backoff: { initialMs: 50, maxMs: 400 },
    logger: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }),
  });
  links.push(link);
  link.start();
  await link.waitForRegistration(10_000);
  return { link, key };
}

const cases = (messages: ConnectRequest[]) => messages.map((m) => m.message.case);

function terminalOf(requestId: string): InferenceComplete | InferenceError {
  return coordinator.terminal(requestId)?.message.value as InferenceComplete | InferenceError;
}

describe("the link serves embeddings", () => {
  it("registers the embedding model with the embeddings feature", async () => {
    await connect();
    const features = new Map(coordinator.registers[0]?.models.map((m) => [m.id, m.features]));
    expect(features.get(embed.id)).toContain(ModelFeature.EMBEDDINGS);
    expect(features.get(tiny.id)).not.toContain(ModelFeature.EMBEDDINGS);
    expect(features.get(tiny.id)).toContain(ModelFeature.GRAMMAR);
    // It writes no completions, so it enforces no grammar either.
    expect(features.get(embed.id)).not.toContain(ModelFeature.GRAMMAR);
  });

  it("advertises an embedding model's context as at most 8,192 tokens an input, whatever it was trained for", async () => {
    await connect(
      engine,
      [
        { ...embed, contextLength: 32_768 },
        { ...tiny, contextLength: 32_768 },
      ],
      50_000,
    );
    const contexts = new Map(coordinator.registers[0]?.models.map((m) => [m.id, m.contextLength]));
    expect(contexts.get(embed.id)).toBe(8192);
    expect(contexts.get(tiny.id)).toBe(32_768);
  });

  it("answers one sealed chunk per input as it is computed, then a signed completion the consumer can verify", async () => {
    const { key } = await connect();
    const texts = ["The quick brown fox", "héllo 🌸", "The quick brown fox", "1, 2, 3, 10, 42 and 2048"];
    const body = { model: embed.id, input: texts, encoding_format: "base64" };
    const sent = coordinator.request("r1", embed.id, Endpoint.EMBEDDINGS, body, key.publicKey);
    await coordinator.waitFor(() => coordinator.terminal("r1") !== undefined, 20_000, "r1 to finish");
    expect(cases(coordinator.about("r1"))).toEqual([
      "inferenceAccepted",
      ...texts.map(() => "inferenceChunk"),
      "inferenceComplete",
    ]);
    // Sealed with the request's key, in input order, sequence numbers from 0.
    const chunks = coordinator.about("r1").filter((m) => m.message.case === "inferenceChunk");
    expect(chunks.map((m) => (m.message.value as { sequence: bigint }).sequence)).toEqual([0n, 1n, 2n, 3n]);
    expect(
      chunks.every((m) => (m.message.value as { payload: { case: string } }).payload.case === "sealed"),
    ).toBe(true);
    const payloads = coordinator.payloads("r1");
    expect(payloads.map((p) => p.embedding?.index)).toEqual([0, 1, 2, 3]);
    expect(payloads.every((p) => p.text === "" && p.choiceIndex === 0)).toBe(true);

    // The values are the engine's vectors for each input; the counts the coordinator's.
    const direct = await engine.embed({
      id: "direct",
      model: embed.id,
      inputs: texts.map((text) => ({ kind: "embedding", text })),
    }).done;
    const vectors = payloads.map((p) => embeddingFromBytes(p.embedding?.values ?? new Uint8Array()));
    expect(vectors).toEqual(direct.embeddings);
    expect(vectors[0]).toHaveLength(128);
    expect(vectors[2]).toEqual(vectors[0]);
    const counts = texts.map((text) => counter.countPrompt({ kind: "embedding", text }));
    expect(payloads.map((p) => p.tokenCount)).toEqual(counts);

    const complete = terminalOf("r1") as InferenceComplete;
    const promptTokens = counts.reduce((a, b) => a + b, 0);
    expect(complete.usage).toMatchObject({ promptTokens, completionTokens: 0 });
    expect(complete.choices).toEqual([]);
    const signature = complete.signature;
    expect(signature?.version).toBe(EMBEDDINGS_SIGNATURE_VERSION);
    const requestSha256 = createHash("sha256").update(sent).digest();
    expect(Buffer.from(signature?.requestSha256 ?? [])).toEqual(requestSha256);
    const responseSha256 = embeddingsSha256({
      providerId: FAKE_PROVIDER_ID,
      model: embed.id,
      embeddings: vectors,
      promptTokens,
    });
    expect(Buffer.from(signature?.responseSha256 ?? [])).toEqual(Buffer.from(responseSha256));
    expect(
      verifyEmbeddingsSignature(
        signer.publicKey(),
        requestSha256,
        responseSha256,
        signature?.signature ?? new Uint8Array(),
      ),
    ).toBe(true);

    // The response the coordinator would present, checked as a consumer checks it.
    const presented = {
      object: "list",
      model: embed.id,
      data: vectors.map((v, index) => ({
        object: "embedding",
        index,
        embedding: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64"),
      })),
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
      darkbloom: {
        version: EMBEDDINGS_SIGNATURE_VERSION,
        provider_id: FAKE_PROVIDER_ID,
        trust_level: "self_signed",
        signing_key: Buffer.from(signer.publicKey()).toString("base64"),
        request_sha256: hex(requestSha256),
        response_sha256: hex(responseSha256),
        usage: { prompt_tokens: promptTokens, completion_tokens: 0 },
        signature: Buffer.from(signature?.signature ?? []).toString("base64"),
      },
    };
    const checked = verifyEmbeddingsResponse(presented, {
      requestBody: sent,
      signingKey: Buffer.from(signer.publicKey()).toString("base64"),
    });
    expect(checked).toMatchObject({ ok: true, pinned: true });
  });

  it("refuses bad bodies before accepting, and fails what the engine refuses", async () => {
    const { key } = await connect();
    const failure = (id: string) => terminalOf(id) as InferenceError;
    coordinator.request(
      "empty",
      embed.id,
      Endpoint.EMBEDDINGS,
      { model: embed.id, input: [] },
      key.publicKey,
    );
    coordinator.request("ids", embed.id, Endpoint.EMBEDDINGS, { input: [1, 2, 3] }, key.publicKey);
    coordinator.request("json", embed.id, Endpoint.EMBEDDINGS, "{not json", key.publicKey);
    coordinator.request(
      "dims",
      embed.id,
      Endpoint.EMBEDDINGS,
      { input: "hi", dimensions: 129 },
      key.publicKey,
    );
    coordinator.request("chat", tiny.id, Endpoint.EMBEDDINGS, { input: "hi" }, key.publicKey);
    const long = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    coordinator.request("long", embed.id, Endpoint.EMBEDDINGS, { input: ["hi", long] }, key.publicKey);
    const ids = ["empty", "ids", "json", "dims", "chat", "long"];
    await coordinator.waitFor(() => ids.every((id) => coordinator.terminal(id)), 20_000, "the refusals");
    for (const id of ["empty", "ids", "json"]) {
      expect(cases(coordinator.about(id))).toEqual(["inferenceError"]);
      expect(failure(id)).toMatchObject({ httpStatus: 400, code: "invalid_request_error", retryable: false });
    }
    expect(failure("empty").message).toMatch(/'input' must not be empty/);
    expect(failure("ids").message).toMatch(/token ids is not supported/);
    // What only the model can judge is refused by the engine after the request was accepted.
    for (const id of ["dims", "chat", "long"]) {
      expect(cases(coordinator.about(id))).toEqual(["inferenceAccepted", "inferenceError"]);
    }
    expect(failure("dims")).toMatchObject({
      httpStatus: 400,
      code: "invalid_request_error",
      retryable: false,
    });
    expect(failure("dims").message).toMatch(/'dimensions' must be at most 128/);
    expect(failure("chat")).toMatchObject({ httpStatus: 400, code: "invalid_request_error" });
    expect(failure("chat").message).toMatch(/not an embedding model/);
    expect(failure("long")).toMatchObject({
      httpStatus: 400,
      code: "context_length_exceeded",
      retryable: false,
    });
  });

  it("refuses embeddings where the engine computes none", async () => {
    const scripted = new ScriptedEngine();
    await scripted.load(embed);
    const without: Engine = Object.assign(scripted, { embed: undefined });
    const { key } = await connect(without);
    coordinator.request("r", embed.id, Endpoint.EMBEDDINGS, { input: "hi" }, key.publicKey);
    await coordinator.waitFor(() => coordinator.terminal("r") !== undefined);
    expect(cases(coordinator.about("r"))).toEqual(["inferenceError"]);
    expect(terminalOf("r")).toMatchObject({
      httpStatus: 400,
      code: "invalid_request_error",
      retryable: false,
    });
  });

  it("a Cancel stops the embedding job; a lost stream does too", async () => {
    const { link, key } = await connect();
    const cancelledBefore = engine.stats().requestsCancelled;
    const many = Array.from({ length: 300 }, (_, i) => `input number ${i}`);
    coordinator.request("c1", embed.id, Endpoint.EMBEDDINGS, { input: many }, key.publicKey);
    await coordinator.waitFor(() => cases(coordinator.about("c1")).includes("inferenceAccepted"));
    coordinator.send({ message: { case: "cancel", value: { requestId: "c1", reason: "consumer left" } } });
    await expect.poll(() => engine.stats().requestsCancelled, { timeout: 10_000 }).toBe(cancelledBefore + 1);
    await new Promise((r) => setTimeout(r, 100));
    // The inputs computed before the Cancel went out as they were done; nothing ends the request.
    const c1 = cases(coordinator.about("c1"));
    expect(c1[0]).toBe("inferenceAccepted");
    expect(c1.slice(1).every((c) => c === "inferenceChunk")).toBe(true);
    expect(c1.length - 1).toBeLessThan(many.length);
    expect(link.inFlight).toBe(0);

    // The link and the engine keep serving.
    coordinator.request("after", embed.id, Endpoint.EMBEDDINGS, { input: "hi" }, key.publicKey);
    await coordinator.waitFor(() => coordinator.terminal("after") !== undefined);
    expect(coordinator.terminal("after")?.message.case).toBe("inferenceComplete");

    coordinator.request("lost", embed.id, Endpoint.EMBEDDINGS, { input: many }, key.publicKey);
    await coordinator.waitFor(() => cases(coordinator.about("lost")).includes("inferenceAccepted"));
    link.killConnection();
    await expect.poll(() => engine.stats().requestsCancelled, { timeout: 10_000 }).toBe(cancelledBefore + 2);
  });
});
