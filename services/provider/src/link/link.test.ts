import { randomBytes } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import {
  postJson,
  startTestCoordinator,
  startTestPostgres,
  type TestCoordinator,
  type TestPostgres,
  waitFor,
} from "@darkbloom/coordinator/testing";
import {
  type ChunkPayload,
  ChunkPayloadSchema,
  type ConnectRequest,
  Endpoint,
  type InferenceError,
  LoadModelState,
  ProviderState,
} from "@darkbloom/protocol/provider/v1";
import { type BoxKey, BoxKeyPair } from "@darkbloom/protocol/sealed-box";
import { readSse } from "@darkbloom/testing";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ModelFile } from "../engine/engine.js";
import { describeHardware } from "../machine/hardware.js";
import { ScriptedEngine, type ScriptedEngineOptions } from "../testing/scripted-engine.js";
import { ProviderLink, type ProviderLinkOptions } from "./link.js";

/** A response body as loosely typed JSON, for assertions. */
// biome-ignore lint/suspicious/noExplicitAny: assertions check the shape
const readJson = async (res: Response): Promise<any> => res.json();

const TINY: ModelFile = {
  id: "tiny",
  path: "/nonexistent/tiny.gguf",
  sizeBytes: 1_048_576,
  quantization: "Q8_0",
  sha256: "ab".repeat(32),
  architecture: "llama",
  contextLength: 2048,
};
const OTHER: ModelFile = { ...TINY, id: "other", sha256: "cd".repeat(32) };

let pg: TestPostgres;
beforeAll(async () => {
  pg = await startTestPostgres();
});
afterAll(async () => {
  await pg?.stop();
});

const tokens = (n: number, from = 0) => Array.from({ length: n }, (_, i) => `tok${from + i} `).join("");

describe("provider link against a real coordinator", () => {
  let t: TestCoordinator;
  const links: ProviderLink[] = [];

  async function connect(
    engineOptions: ScriptedEngineOptions = {},
    linkOptions: Partial<ProviderLinkOptions> = {},
  ): Promise<{ link: ProviderLink; engine: ScriptedEngine }> {
    const engine = new ScriptedEngine(engineOptions);
    const models = linkOptions.models ?? [TINY];
    for (const m of models) await engine.load(m).catch(() => undefined);
    const link = new ProviderLink({
      coordinatorUrl: t.url,
      engine,
      models,
      machineId: `test-${randomBytes(6).toString("hex")}`,
      encryptionKey: BoxKeyPair.generate(),
      daemonVersion: "0.1.0",
      hardware: describeHardware(),
      knobs: { kvBits: 8, maxContext: 4096, maxBatch: 4, idleTimeoutMinutes: 0, threads: 2 },
      backoff: { initialMs: 50, maxMs: 400 },
      logger: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }),
      ...linkOptions,
    });
    links.push(link);
    link.start();
    await link.waitForRegistration(10_000);
    return { link, engine };
  }

  /** Everything the coordinator receives from this provider's current session. */
  function tap(providerId: string): ConnectRequest[] {
    const session = t.coordinator.sessions.get(providerId);
    if (!session) throw new Error(`no session ${providerId}`);
    const seen: ConnectRequest[] = [];
    const receive = session.receive.bind(session);
    session.receive = (m: ConnectRequest) => {
      seen.push(m);
      receive(m);
    };
    return seen;
  }

  /** The chunk payloads the coordinator receives from this provider, opened with each request's key. */
  function tapPayloads(providerId: string): ChunkPayload[] {
    const session = t.coordinator.sessions.get(providerId);
    if (!session) throw new Error(`no session ${providerId}`);
    const keys = new Map<string, BoxKey>();
    const payloads: ChunkPayload[] = [];
    const dispatch = session.dispatch.bind(session);
    session.dispatch = (request, observer, key) => {
      if (key) keys.set(request.requestId ?? "", key);
      return dispatch(request, observer, key);
    };
    const receive = session.receive.bind(session);
    session.receive = (m: ConnectRequest) => {
      if (m.message.case === "inferenceChunk" && m.message.value.payload.case === "sealed") {
        const key = keys.get(m.message.value.requestId);
        if (key && !key.wiped)
          payloads.push(fromBinary(ChunkPayloadSchema, key.open(m.message.value.payload.value)));
      }
      receive(m);
    };
    return payloads;
  }

  beforeAll(async () => {
    t = await startTestCoordinator(pg.url, { heartbeatIntervalMs: 500, queueTimeoutMs: 2_000 });
  });
  afterEach(async () => {
    await Promise.all(links.splice(0).map((l) => l.close()));
    await waitFor(() => t.coordinator.registry.size === 0, 5_000, "providers to leave");
  });
  afterAll(async () => {
    await t?.close();
  });

  it("registers with hardware, models, capacity, knobs and a 32-byte encryption key", async () => {
    const { link } = await connect();
    const handle = t.coordinator.registry.get(link.providerId ?? "");
    expect(handle).toBeDefined();
    expect(handle?.engineBackend).toBe("scripted");
    expect(handle?.daemonVersion).toBe("0.1.0");
    expect(handle?.maxBatch).toBe(4);
    expect(handle?.maxContext).toBe(4096);
    expect(handle?.models.get("tiny")).toMatchObject({
      id: "tiny",
      sizeBytes: 1_048_576n,
      quantization: "Q8_0",
      weightSha256: "ab".repeat(32),
      contextLength: 2048,
      architecture: "llama",
    });
    expect(handle?.hardware?.memoryBytes).toBeGreaterThan(0n);
    expect(handle?.hardware?.cpuCores).toBeGreaterThan(0);
    expect(handle?.hardware?.chip).not.toBe("");
  });

  it("serves a chat completion end to end, non-streaming and streaming", async () => {
    const { engine } = await connect({ tokensPerGeneration: 5 });
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, {
      model: "tiny",
      messages: [{ role: "user", content: "Say hello" }],
      temperature: 0,
      seed: 42,
      stop: ["never"],
    });
    expect(res.status).toBe(200);
    const body = await readJson(res);
    expect(body).toMatchObject({
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content: tokens(5) }, finish_reason: "stop" }],
      usage: { prompt_tokens: 5, completion_tokens: 5 },
    });
    const submitted = engine.submitted[0];
    expect(submitted?.id).toMatch(/\/0$/);
    expect(submitted?.input).toEqual({ kind: "chat", messages: [{ role: "user", content: "Say hello" }] });
    expect(submitted?.sampling).toMatchObject({
      temperature: 0,
      seed: 42,
      stop: ["never"],
      topP: 1,
      topK: 0,
    });
    expect(submitted?.sampling.maxTokens).toBeGreaterThan(0);

    const streamed = await postJson(t.url, "/v1/chat/completions", t.apiKey, {
      model: "tiny",
      messages: [{ role: "user", content: "Say hello" }],
      stream: true,
      max_tokens: 3,
    });
    expect(streamed.status).toBe(200);
    const { events } = await readSse(streamed);
    const text = events
      .filter((e) => e.data !== "[DONE]")
      .map((e) => JSON.parse(e.data).choices?.[0]?.delta?.content ?? "")
      .join("");
    expect(text).toBe(tokens(3));
    expect(events.at(-1)?.data).toBe("[DONE]");
    const finish = events
      .filter((e) => e.data !== "[DONE]")
      .map((e) => JSON.parse(e.data).choices?.[0]?.finish_reason)
      .find((r) => r);
    expect(finish).toBe("length");
    expect(engine.submitted[1]?.sampling.maxTokens).toBe(3);
  });

  it("serves /v1/completions with a prompt", async () => {
    const { engine } = await connect({ tokensPerGeneration: 2 });
    const res = await postJson(t.url, "/v1/completions", t.apiKey, { model: "tiny", prompt: "Once upon" });
    expect(res.status).toBe(200);
    expect(await readJson(res)).toMatchObject({ choices: [{ text: tokens(2), finish_reason: "stop" }] });
    expect(engine.submitted[0]?.input).toEqual({ kind: "text", prompt: "Once upon" });
  });

  it("submits one generation per choice for n=2 and reports per-choice finish reasons", async () => {
    const { engine, link } = await connect({ tokensPerGeneration: 4 });
    const seen = tap(link.providerId ?? "");
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, {
      model: "tiny",
      messages: [{ role: "user", content: "Two please" }],
      n: 2,
      seed: 7,
      max_tokens: 10,
    });
    expect(res.status).toBe(200);
    const body = await readJson(res);
    expect(body.choices).toHaveLength(2);
    for (const [i, choice] of body.choices.entries()) {
      expect(choice).toMatchObject({ index: i, message: { content: tokens(4) }, finish_reason: "stop" });
    }
    expect(body.usage.completion_tokens).toBe(8);
    const ids = engine.submitted.map((r) => r.id);
    expect(ids).toHaveLength(2);
    expect(ids[0]?.replace(/\/0$/, "/1")).toBe(ids[1]);
    expect(engine.submitted.map((r) => r.sampling.seed)).toEqual([7, 8]);
    // Chunk sequences run from 0 without gaps across both choices.
    const chunks = seen.flatMap((m) => (m.message.case === "inferenceChunk" ? [m.message.value] : []));
    expect(chunks.map((c) => Number(c.sequence))).toEqual(chunks.map((_, i) => i));
    const complete = seen.find((m) => m.message.case === "inferenceComplete")?.message.value;
    expect(complete).toMatchObject({
      usage: { completionTokens: 8 },
      choices: [
        { index: 0, finishReason: "stop" },
        { index: 1, finishReason: "stop" },
      ],
    });
    expect(seen.findIndex((m) => m.message.case === "inferenceAccepted")).toBeLessThan(
      seen.findIndex((m) => m.message.case === "inferenceChunk"),
    );
  });

  it("coalesces tokens produced while the previous chunk waits for the wire", async () => {
    const { link } = await connect({ tokensPerGeneration: 200 });
    const seen = tap(link.providerId ?? "");
    const payloads = tapPayloads(link.providerId ?? "");
    const res = await postJson(t.url, "/v1/completions", t.apiKey, {
      model: "tiny",
      prompt: "x",
      max_tokens: 200,
    });
    expect(res.status).toBe(200);
    expect((await readJson(res)).choices[0].text).toBe(tokens(200));
    const chunks = seen.flatMap((m) => (m.message.case === "inferenceChunk" ? [m.message.value] : []));
    expect(chunks.every((c) => c.payload.case === "sealed")).toBe(true);
    expect(payloads).toHaveLength(chunks.length);
    expect(payloads.reduce((sum, p) => sum + p.tokenCount, 0)).toBe(200);
    expect(payloads.map((p) => p.text).join("")).toBe(tokens(200));
    expect(chunks.length).toBeLessThanOrEqual(200);
  });

  it("cancels the engine generation when the consumer goes away", async () => {
    const { engine } = await connect({ tokenIntervalMs: 20, tokensPerGeneration: 10_000 });
    const controller = new AbortController();
    const res = await postJson(
      t.url,
      "/v1/chat/completions",
      t.apiKey,
      { model: "tiny", messages: [{ role: "user", content: "go on" }], stream: true, max_tokens: 1000 },
      { signal: controller.signal },
    );
    expect(res.status).toBe(200);
    const reader = res.body?.getReader();
    await reader?.read(); // the first bytes: generation is running
    await waitFor(() => engine.activeIds.length === 1, 5_000, "the generation to run");
    const id = engine.activeIds[0];
    controller.abort();
    await waitFor(() => engine.cancelled.includes(id ?? ""), 5_000, "the engine generation to be cancelled");
    expect(engine.activeIds).toEqual([]);
  });

  it("maps context_length_exceeded from the engine to a 400 the consumer sees", async () => {
    const { engine } = await connect({ maxContext: 50 });
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, {
      model: "tiny",
      messages: [{ role: "user", content: "hello" }],
      max_tokens: 100,
    });
    expect(res.status).toBe(400);
    const body = await readJson(res);
    expect(body.error).toMatchObject({ code: "context_length_exceeded", type: "invalid_request_error" });
    expect(engine.submitted).toHaveLength(1); // not retried elsewhere: not retryable
  });

  it("refuses a model it does not serve, a plaintext body, a body it cannot open, and bad JSON", async () => {
    const { link } = await connect();
    const session = t.coordinator.sessions.get(link.providerId ?? "");
    const errors: InferenceError[] = [];
    const observer = (onError: (e: InferenceError) => void) => ({
      accepted: () => undefined,
      chunk: () => undefined,
      complete: () => undefined,
      error: onError,
      lost: () => undefined,
    });
    const body = new TextEncoder().encode(JSON.stringify({ model: "x", prompt: "hi" }));
    await new Promise<void>((resolve) => {
      session?.dispatch(
        {
          requestId: "req_notserved",
          model: "nope",
          endpoint: Endpoint.COMPLETIONS,
          body: { case: "plaintextBody", value: body },
          maxTokens: 4,
        },
        observer((e) => {
          errors.push(e);
          resolve();
        }),
      );
    });
    const send = (
      requestId: string,
      requestBody: { case: "plaintextBody"; value: Uint8Array } | { case: "sealedBody"; value: object },
    ) =>
      new Promise<void>((resolve) => {
        session?.dispatch(
          {
            requestId,
            model: "tiny",
            endpoint: Endpoint.COMPLETIONS,
            body: requestBody as never,
            maxTokens: 4,
          },
          observer((e) => {
            errors.push(e);
            resolve();
          }),
        );
      });
    // A plaintext body: end-to-end encryption is required, whatever the body says.
    await send("req_plaintext", { case: "plaintextBody", value: body });
    // Sealed to another key: it does not open (another provider might hold the right key).
    const stranger = BoxKeyPair.generate();
    const sealedElsewhere = stranger.keyFor(BoxKeyPair.generate().publicKey).seal(body);
    await send("req_otherkey", {
      case: "sealedBody",
      value: { senderPublicKey: stranger.publicKey, ...sealedElsewhere },
    });
    // Sealed properly, but not JSON.
    const sender = BoxKeyPair.generate();
    const sealedBadJson = sender
      .keyFor(session?.encryptionKey ?? new Uint8Array(32))
      .seal(new TextEncoder().encode("{"));
    await send("req_badjson", {
      case: "sealedBody",
      value: { senderPublicKey: sender.publicKey, ...sealedBadJson },
    });
    expect(errors.map((e) => [e.requestId, e.httpStatus, e.code, e.retryable])).toEqual([
      ["req_notserved", 404, "model_not_found", true],
      ["req_plaintext", 400, "encryption_required", false],
      ["req_otherkey", 500, "decryption_failed", true],
      ["req_badjson", 400, "invalid_request_error", false],
    ]);
    expect(errors[1]?.message).toMatch(/sealed/);
  });

  it("heartbeats carry the engine's live stats", async () => {
    const { link, engine } = await connect({
      tokenIntervalMs: 20,
      tokensPerGeneration: 10_000,
      prefillTokensPerSecond: 1234,
      decodeTokensPerSecond: 56,
    });
    const handle = t.coordinator.registry.get(link.providerId ?? "");
    await waitFor(() => (handle?.decodeTokensPerSecond ?? 0) === 56, 5_000, "a heartbeat");
    expect(handle?.prefillTokensPerSecond).toBe(1234);
    expect(handle?.state).toBe(ProviderState.IDLE);
    expect([...(handle?.loadedModels ?? [])]).toEqual(["tiny"]);

    const controller = new AbortController();
    const res = await postJson(
      t.url,
      "/v1/chat/completions",
      t.apiKey,
      { model: "tiny", messages: [{ role: "user", content: "go on" }], stream: true, max_tokens: 1000 },
      { signal: controller.signal },
    );
    await waitFor(() => handle?.busySlots === 1, 5_000, "a heartbeat while serving");
    expect(handle?.state).toBe(ProviderState.SERVING);
    expect(handle?.kvCacheUsage).toBeCloseTo(0.25);
    controller.abort();
    await res.body?.cancel().catch(() => undefined);
    await waitFor(() => engine.activeIds.length === 0, 5_000, "the generation to end");
    await waitFor(
      () => handle?.busySlots === 0 && handle.state === ProviderState.IDLE,
      5_000,
      "an idle heartbeat",
    );
    expect(link.counters.heartbeatsSent).toBeGreaterThan(1);
  });

  it("loads and unloads models on the coordinator's command with started/succeeded/failed status", async () => {
    const { link, engine } = await connect({ failLoad: ["other"] }, { models: [TINY, OTHER] });
    const session = t.coordinator.sessions.get(link.providerId ?? "");
    const seen = tap(link.providerId ?? "");
    const loaded = await session?.loadModel("tiny", "op-1", 5_000);
    expect(loaded).toMatchObject({ operationId: "op-1", modelId: "tiny", state: LoadModelState.SUCCEEDED });
    const failed = await session?.loadModel("other", "op-2", 5_000);
    expect(failed).toMatchObject({
      state: LoadModelState.FAILED,
      reason: "cannot load other: scripted failure",
    });
    const unknown = await session?.loadModel("missing", "op-3", 5_000);
    expect(unknown?.state).toBe(LoadModelState.FAILED);
    expect(unknown?.reason).toMatch(/not served/);
    const unloaded = await session?.unloadModel("tiny", "op-4", 5_000);
    expect(unloaded?.state).toBe(LoadModelState.SUCCEEDED);
    expect(engine.unloads).toEqual(["tiny"]);
    const statuses = seen.flatMap((m) =>
      m.message.case === "loadModelStatus" ? [[m.message.value.operationId, m.message.value.state]] : [],
    );
    expect(statuses).toEqual([
      ["op-1", LoadModelState.STARTED],
      ["op-1", LoadModelState.SUCCEEDED],
      ["op-2", LoadModelState.STARTED],
      ["op-2", LoadModelState.FAILED],
      ["op-3", LoadModelState.STARTED],
      ["op-3", LoadModelState.FAILED],
      ["op-4", LoadModelState.STARTED],
      ["op-4", LoadModelState.SUCCEEDED],
    ]);
    const handle = t.coordinator.registry.get(link.providerId ?? "");
    await waitFor(
      () => handle !== undefined && !handle.loadedModels.has("tiny"),
      5_000,
      "a heartbeat without tiny",
    );
    // A request for the unloaded model loads it again first.
    const res = await postJson(t.url, "/v1/completions", t.apiKey, { model: "tiny", prompt: "back" });
    expect(res.status).toBe(200);
    expect(engine.loads.filter((id) => id === "tiny")).toHaveLength(3); // connect, op-1, the request
  });

  it("on Drain refuses new work, finishes in-flight requests, then reconnects", async () => {
    const { link, engine } = await connect({ tokenIntervalMs: 10, tokensPerGeneration: 30 });
    const firstId = link.providerId ?? "";
    const session = t.coordinator.sessions.get(firstId);
    const pending = postJson(t.url, "/v1/completions", t.apiKey, {
      model: "tiny",
      prompt: "x",
      max_tokens: 30,
    });
    await waitFor(() => engine.activeIds.length === 1, 5_000, "the request to run");
    const drained = new Promise((resolve) => link.once("drain", resolve));
    session?.drain("test_drain", 10_000);
    await drained;
    // A request that reaches the provider now is refused with a retryable 503.
    const refusal = await new Promise<InferenceError>((resolve) => {
      session?.dispatch(
        {
          requestId: "req_during_drain",
          model: "tiny",
          endpoint: Endpoint.COMPLETIONS,
          body: { case: "plaintextBody", value: new TextEncoder().encode('{"model":"tiny","prompt":"x"}') },
          maxTokens: 4,
        },
        {
          accepted: () => undefined,
          chunk: () => undefined,
          complete: () => undefined,
          error: resolve,
          lost: () => undefined,
        },
      );
    });
    expect(refusal).toMatchObject({ httpStatus: 503, code: "provider_draining", retryable: true });
    const res = await pending;
    expect(res.status).toBe(200);
    expect((await readJson(res)).choices[0].text).toBe(tokens(30));
    const reconnected = await link
      .waitForRegistration(10_000)
      .then(async (ack) =>
        ack.providerId === firstId
          ? await new Promise<{ providerId: string }>((r) => link.once("registered", r))
          : ack,
      );
    expect(reconnected.providerId).not.toBe(firstId);
    expect(link.counters.registrations).toBe(2);
  });

  it("cancels in-flight work when the stream drops, then reconnects", async () => {
    const { link, engine } = await connect({ tokenIntervalMs: 20, tokensPerGeneration: 10_000 });
    const firstId = link.providerId;
    const pending = postJson(t.url, "/v1/chat/completions", t.apiKey, {
      model: "tiny",
      messages: [{ role: "user", content: "go on" }],
      stream: true,
      max_tokens: 1000,
    }).catch(() => undefined);
    await waitFor(() => engine.activeIds.length === 1, 5_000, "the request to run");
    const id = engine.activeIds[0] ?? "";
    const registered = new Promise<{ providerId: string }>((resolve) => link.once("registered", resolve));
    link.killConnection();
    await waitFor(() => engine.cancelled.includes(id), 5_000, "in-flight work to be cancelled");
    const ack = await registered;
    expect(ack.providerId).not.toBe(firstId);
    const res = await pending;
    await res?.text().catch(() => undefined);
  });

  it("stop() drains: refuses new work, lets in-flight requests finish, and does not reconnect", async () => {
    const { link, engine } = await connect({ tokenIntervalMs: 10, tokensPerGeneration: 20 });
    const pending = postJson(t.url, "/v1/completions", t.apiKey, {
      model: "tiny",
      prompt: "x",
      max_tokens: 20,
    });
    await waitFor(() => engine.activeIds.length === 1, 5_000, "the request to run");
    const disconnected = new Promise((resolve) => link.once("disconnected", resolve));
    await link.stop(10_000);
    const res = await pending;
    expect(res.status).toBe(200);
    expect((await readJson(res)).choices[0].text).toBe(tokens(20));
    expect(await disconnected).toMatchObject({ reason: "stopped", reconnectInMs: undefined });
    await waitFor(() => t.coordinator.registry.size === 0, 5_000, "the provider to leave");
    await new Promise((r) => setTimeout(r, 200));
    expect(link.connected).toBe(false);
  });

  it("stop() with a short deadline fails what is still running", async () => {
    const { link, engine } = await connect({ tokenIntervalMs: 20, tokensPerGeneration: 10_000 });
    const pending = postJson(t.url, "/v1/completions", t.apiKey, {
      model: "tiny",
      prompt: "x",
      max_tokens: 1000,
    });
    await waitFor(() => engine.activeIds.length === 1, 5_000, "the request to run");
    const id = engine.activeIds[0] ?? "";
    await link.stop(100);
    expect(engine.cancelled).toContain(id);
    const res = await pending;
    expect(res.status).toBeGreaterThanOrEqual(500);
  });
});

describe("reconnect after a coordinator restart", () => {
  it("re-registers with the new coordinator on the same port", async () => {
    let t = await startTestCoordinator(pg.url, { heartbeatIntervalMs: 500 });
    const port = Number(new URL(t.url).port);
    const engine = new ScriptedEngine({ tokensPerGeneration: 3 });
    await engine.load(TINY);
    const link = new ProviderLink({
      coordinatorUrl: t.url,
      engine,
      models: [TINY],
      machineId: "restart-test",
      encryptionKey: BoxKeyPair.generate(),
      daemonVersion: "0.1.0",
      hardware: describeHardware(),
      knobs: { kvBits: 0, maxContext: 4096, maxBatch: 2, idleTimeoutMinutes: 0, threads: 1 },
      backoff: { initialMs: 50, maxMs: 200 },
      logger: pino({ level: "silent" }),
    });
    try {
      link.start();
      const first = await link.waitForRegistration(10_000);
      const disconnects: string[] = [];
      link.on("disconnected", (d) => disconnects.push(d.reason));
      await t.close();
      await waitFor(() => !link.connected, 5_000, "the link to notice");
      // Nothing listens for a while: attempts fail and back off.
      await new Promise((r) => setTimeout(r, 300));
      const registered = new Promise<{ providerId: string }>((resolve) => link.once("registered", resolve));
      t = await startTestCoordinator(pg.url, { heartbeatIntervalMs: 500, port });
      const second = await registered;
      expect(second.providerId).not.toBe(first.providerId);
      expect(disconnects.length).toBeGreaterThanOrEqual(2); // the drain/close, then failed dials
      const res = await postJson(t.url, "/v1/completions", t.apiKey, { model: "tiny", prompt: "again" });
      expect(res.status).toBe(200);
      expect((await readJson(res)).choices[0].text).toBe(tokens(3));
    } finally {
      await link.close();
      await t.close();
    }
  });
});
