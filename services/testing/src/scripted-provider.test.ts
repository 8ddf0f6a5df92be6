import { createHash } from "node:crypto";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Channel, PROTOCOL_VERSION } from "@darkbloom/protocol";
import {
  ChunkPayloadSchema,
  type ConnectRequest,
  type ConnectResponse,
  ConnectResponseSchema,
  Endpoint,
  LoadModelState,
  MemoryPressure,
  ProviderService,
  ProviderState,
  ThermalState,
  TrustLevel,
} from "@darkbloom/protocol/provider/v1";
import { BoxKeyPair } from "@darkbloom/protocol/sealed-box";
import { afterEach, describe, expect, it } from "vitest";
import type { Script } from "./script.js";
import type { Disconnect, ScriptedProviderOptions } from "./scripted-options.js";
import { ScriptedProvider, startScriptedProviders, stopAll } from "./scripted-provider.js";
import { readSse, SseFormatError } from "./sse.js";

type Case = NonNullable<ConnectRequest["message"]["case"]>;
type ValueOf<C extends Case> = Extract<ConnectRequest["message"], { case: C }>["value"];

/** One provider stream as the stand-in coordinator sees it. */
class Conn {
  readonly received: ConnectRequest[] = [];
  readonly arrivals: number[] = [];
  readonly outbound = new Channel<ConnectResponse>();
  /** How the provider's request stream ended: "graceful" (END_STREAM) or "aborted". */
  closed: "graceful" | "aborted" | undefined;
  private readonly listeners = new Set<() => void>();

  send(message: MessageInitShape<typeof ConnectResponseSchema>["message"]): void {
    this.outbound.push(create(ConnectResponseSchema, { message }));
  }

  /** Ends the response stream, as a coordinator that drops the provider would. */
  end(): void {
    this.outbound.close();
  }

  all<C extends Case>(kind: C): ValueOf<C>[] {
    return this.received.filter((m) => m.message.case === kind).map((m) => m.message.value as ValueOf<C>);
  }

  /** Resolves once check() returns a value, re-evaluated on every message and on close. */
  until<T>(check: () => T | undefined, timeoutMs = 2_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const evaluate = (): void => {
        const value = check();
        if (value === undefined) return;
        this.listeners.delete(evaluate);
        clearTimeout(timer);
        resolve(value);
      };
      const timer = setTimeout(() => {
        this.listeners.delete(evaluate);
        reject(new Error("timed out waiting on the provider stream"));
      }, timeoutMs);
      this.listeners.add(evaluate);
      evaluate();
    });
  }

  next<C extends Case>(kind: C, index = 0): Promise<ValueOf<C>> {
    return this.until(() => this.all(kind)[index]);
  }

  /** Resolves with the request's messages (other than heartbeats) once it completes or fails. */
  finished(requestId: string): Promise<ConnectRequest[]> {
    return this.until(() => {
      const messages = this.received.filter((m) => requestIdOf(m) === requestId);
      const last = messages.at(-1)?.message.case;
      return last === "inferenceComplete" || last === "inferenceError" ? messages : undefined;
    });
  }

  whenClosed(): Promise<"graceful" | "aborted"> {
    return this.until(() => this.closed);
  }

  record(message: ConnectRequest): void {
    this.received.push(message);
    this.arrivals.push(performance.now());
    this.notify();
  }

  close(how: "graceful" | "aborted"): void {
    if (this.closed) return;
    this.closed = how;
    this.outbound.close();
    this.notify();
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }
}

/** A minimal coordinator stand-in: a real HTTP/2 server with the ProviderService route. */
class StandIn {
  readonly conns: Conn[] = [];
  autoAck = true;
  ackHeartbeatMs = 60_000;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly listeners = new Set<() => void>();
  private acks = 0;

  private constructor(private readonly server: http2.Http2Server) {
    server.on("session", (s) => {
      this.sessions.add(s);
      s.once("close", () => this.sessions.delete(s));
    });
  }

  static async start(): Promise<StandIn> {
    const server = http2.createServer();
    const standIn = new StandIn(server);
    const handler = connectNodeAdapter({
      routes: (router) =>
        router.service(ProviderService, {
          connect: (requests, context) => standIn.accept(requests, context),
        }),
    });
    server.on("request", handler);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return standIn;
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  conn(index: number): Promise<Conn> {
    return new Promise((resolve) => {
      const check = (): void => {
        const conn = this.conns[index];
        if (!conn) return;
        this.listeners.delete(check);
        resolve(conn);
      };
      this.listeners.add(check);
      check();
    });
  }

  async close(): Promise<void> {
    for (const session of this.sessions) session.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private accept(
    requests: AsyncIterable<ConnectRequest>,
    context: HandlerContext,
  ): AsyncIterable<ConnectResponse> {
    const conn = new Conn();
    this.conns.push(conn);
    for (const listener of [...this.listeners]) listener();
    context.signal.addEventListener("abort", () => conn.close("aborted"));
    void this.read(conn, requests);
    return conn.outbound;
  }

  private async read(conn: Conn, requests: AsyncIterable<ConnectRequest>): Promise<void> {
    try {
      for await (const message of requests) {
        conn.record(message);
        if (message.message.case === "register" && this.autoAck) {
          this.acks++;
          conn.send({
            case: "registerAck",
            value: {
              providerId: `prov-${this.acks}`,
              trustLevel: TrustLevel.NONE,
              heartbeatIntervalMs: this.ackHeartbeatMs,
              protocolVersion: PROTOCOL_VERSION,
            },
          });
        }
      }
      conn.close("graceful");
    } catch {
      conn.close("aborted");
    }
  }
}

function requestIdOf(message: ConnectRequest): string | undefined {
  const value = message.message.value;
  return value && "requestId" in value ? value.requestId : undefined;
}

function inferenceRequest(
  requestId: string,
  overrides: { model?: string; maxTokens?: number; body?: unknown } = {},
): MessageInitShape<typeof ConnectResponseSchema>["message"] {
  const body = overrides.body ?? { model: "m1", messages: [{ role: "user", content: "hi" }] };
  return {
    case: "inferenceRequest",
    value: {
      requestId,
      model: overrides.model ?? "m1",
      endpoint: Endpoint.CHAT_COMPLETIONS,
      body: { case: "plaintextBody", value: new TextEncoder().encode(JSON.stringify(body)) },
      maxTokens: overrides.maxTokens ?? 0,
      stream: true,
      promptTokensEstimate: 7,
    },
  };
}

function textOf(messages: ConnectRequest[]): string {
  let text = "";
  for (const { message } of messages) {
    if (message.case === "inferenceChunk" && message.value.payload.case === "plaintext") {
      text += message.value.payload.value.text;
    }
  }
  return text;
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("ScriptedProvider", () => {
  let standIn: StandIn | undefined;
  const providers: ScriptedProvider[] = [];

  async function coordinator(): Promise<StandIn> {
    standIn ??= await StandIn.start();
    return standIn;
  }

  /** A provider connected to the stand-in, which speaks plaintext unless `encryption` is set. */
  async function connected(
    options: Partial<ScriptedProviderOptions> = {},
  ): Promise<{ provider: ScriptedProvider; conn: Conn }> {
    const coord = await coordinator();
    const provider = new ScriptedProvider({
      baseUrl: coord.baseUrl,
      models: [{ id: "m1" }],
      encryption: false,
      ...options,
    });
    providers.push(provider);
    const index = coord.conns.length;
    await provider.start();
    return { provider, conn: await coord.conn(index) };
  }

  function scripted(script: Script, options: Partial<ScriptedProviderOptions> = {}) {
    return connected({ ...options, script: () => script });
  }

  afterEach(async () => {
    for (const provider of providers.splice(0)) provider.kill();
    await standIn?.close();
    standIn = undefined;
  });

  it("registers with its hardware, models and capacity and resolves start() on the RegisterAck", async () => {
    const coord = await coordinator();
    const provider = new ScriptedProvider({
      baseUrl: coord.baseUrl,
      models: [{ id: "m1", contextLength: 4096 }, { id: "m2" }],
      maxBatch: 3,
      machineId: "machine-a",
    });
    providers.push(provider);
    const registered: string[] = [];
    provider.on("registered", (ack) => registered.push(ack.providerId));
    const ack = await provider.start();
    expect(ack.providerId).toBe("prov-1");
    expect(provider.providerId).toBe("prov-1");
    expect(registered).toEqual(["prov-1"]);
    const conn = await coord.conn(0);
    const register = await conn.next("register");
    expect(conn.received[0]?.message.case).toBe("register");
    expect(register.protocolVersion).toBe(PROTOCOL_VERSION);
    expect(register.daemonVersion).toBe("0.0.0-test");
    expect(register.machineId).toBe("machine-a");
    expect(register.hardware?.chip).toBe("scripted");
    expect(register.hardware?.cpuCores).toBeGreaterThan(0);
    expect(register.hardware?.memoryBytes).toBeGreaterThan(0n);
    expect(register.engineBackend).toBe("scripted");
    expect(register.encryptionPublicKey).toHaveLength(32);
    expect(register.capacity).toMatchObject({ maxBatch: 3, maxContext: 4096 });
    expect(register.knobs).toMatchObject({ maxBatch: 3, maxContext: 4096 });
    expect(register.models.map((m) => [m.id, m.contextLength, m.quantization, m.weightSha256])).toEqual([
      ["m1", 4096, "Q8_0", createHash("sha256").update("m1").digest("hex")],
      ["m2", 4096, "Q8_0", createHash("sha256").update("m2").digest("hex")],
    ]);
  });

  it("rejects start() when the stream ends before a RegisterAck or the coordinator is unreachable", async () => {
    const coord = await coordinator();
    coord.autoAck = false;
    const provider = new ScriptedProvider({ baseUrl: coord.baseUrl, models: [{ id: "m1" }] });
    providers.push(provider);
    const started = provider.start();
    (await coord.conn(0)).end();
    await expect(started).rejects.toThrow(/before RegisterAck/);

    const unreachable = new ScriptedProvider({ baseUrl: "http://127.0.0.1:1", models: [{ id: "m1" }] });
    providers.push(unreachable);
    await expect(unreachable.start()).rejects.toThrow();
  });

  it("streams a request: accepted, chunks numbered from 0, then usage and finish reason", async () => {
    const { provider, conn } = await connected();
    const requests: string[] = [];
    provider.on("request", (r) => requests.push(r.requestId));
    conn.send(inferenceRequest("r1"));
    const messages = await conn.finished("r1");
    expect(messages.map((m) => m.message.case)).toEqual([
      "inferenceAccepted",
      ...Array(16).fill("inferenceChunk"),
      "inferenceComplete",
    ]);
    const chunks = conn.all("inferenceChunk");
    expect(chunks.map((c) => c.sequence)).toEqual(Array.from({ length: 16 }, (_, i) => BigInt(i)));
    expect(chunks[0]?.payload).toMatchObject({ case: "plaintext", value: { text: "tok0 ", tokenCount: 1 } });
    expect(textOf(messages)).toBe(Array.from({ length: 16 }, (_, i) => `tok${i} `).join(""));
    const complete = await conn.next("inferenceComplete");
    expect(complete.usage).toMatchObject({ promptTokens: 7, completionTokens: 16 });
    expect(complete.choices.map((c) => [c.index, c.finishReason])).toEqual([[0, "stop"]]);
    expect(requests).toEqual(["r1"]);
    expect(provider.received[0]).toMatchObject({ requestId: "r1", model: "m1", stream: true, maxTokens: 0 });
    expect(provider.received[0]?.body).toMatchObject({ messages: [{ content: "hi" }] });
    expect(provider.completed).toEqual(["r1"]);
    expect(provider.inFlight).toBe(0);
  });

  it("opens sealed requests, seals every chunk back to the request's key and refuses plaintext", async () => {
    const { provider, conn } = await connected({ encryption: true, script: () => ({ tokens: ["x", "y"] }) });
    const providerKey = provider.encryptionPublicKey ?? new Uint8Array();
    expect((await conn.next("register")).encryptionPublicKey).toEqual(providerKey);
    const ephemeral = BoxKeyPair.generate();
    const key = ephemeral.keyFor(providerKey);
    const body = new TextEncoder().encode(
      JSON.stringify({ model: "m1", messages: [{ role: "user", content: "hi" }] }),
    );
    conn.send({
      case: "inferenceRequest",
      value: {
        requestId: "r1",
        model: "m1",
        endpoint: Endpoint.CHAT_COMPLETIONS,
        body: { case: "sealedBody", value: { senderPublicKey: ephemeral.publicKey, ...key.seal(body) } },
        stream: true,
      },
    });
    await conn.finished("r1");
    expect(provider.received[0]).toMatchObject({ sealed: true, body: { messages: [{ content: "hi" }] } });
    const chunks = conn.all("inferenceChunk");
    expect(chunks.map((c) => c.payload.case)).toEqual(["sealed", "sealed"]);
    const texts = chunks.map((c) =>
      c.payload.case === "sealed" ? fromBinary(ChunkPayloadSchema, key.open(c.payload.value)).text : "",
    );
    expect(texts).toEqual(["x", "y"]);
    // Another key cannot open them.
    const stranger = BoxKeyPair.generate().keyFor(providerKey);
    expect(() =>
      chunks[0]?.payload.case === "sealed" ? stranger.open(chunks[0].payload.value) : 0,
    ).toThrow();

    conn.send(inferenceRequest("r2"));
    const error = await conn.next("inferenceError");
    expect(error).toMatchObject({
      requestId: "r2",
      httpStatus: 400,
      code: "encryption_required",
      retryable: false,
    });
  });

  it("packs tokensPerChunk tokens per chunk and repeats them per choice", async () => {
    const { conn } = await scripted({
      tokens: ["a", "b", "c", "d", "e"],
      tokensPerChunk: 2,
      choices: 2,
      promptTokens: 11,
    });
    conn.send(inferenceRequest("r1"));
    await conn.finished("r1");
    const payloads = conn.all("inferenceChunk").map((c) => {
      const p = c.payload.case === "plaintext" ? c.payload.value : undefined;
      return [c.sequence, p?.text, p?.tokenCount, p?.choiceIndex];
    });
    expect(payloads).toEqual([
      [0n, "ab", 2, 0],
      [1n, "ab", 2, 1],
      [2n, "cd", 2, 0],
      [3n, "cd", 2, 1],
      [4n, "e", 1, 0],
      [5n, "e", 1, 1],
    ]);
    const complete = await conn.next("inferenceComplete");
    expect(complete.usage).toMatchObject({ promptTokens: 11, completionTokens: 10 });
    expect(complete.choices.map((c) => c.index)).toEqual([0, 1]);
  });

  it("cuts generation at max_tokens with finish_reason length", async () => {
    const { conn } = await connected();
    conn.send(inferenceRequest("r1", { maxTokens: 5 }));
    const messages = await conn.finished("r1");
    expect(textOf(messages)).toBe("tok0 tok1 tok2 tok3 tok4 ");
    const complete = await conn.next("inferenceComplete");
    expect(complete.usage?.completionTokens).toBe(5);
    expect(complete.choices[0]?.finishReason).toBe("length");
  });

  it("stops a request at once on Cancel: no more chunks, no completion, slot freed", async () => {
    const tokens = Array.from({ length: 200 }, (_, i) => `t${i}`);
    const { provider, conn } = await scripted({ tokens, interTokenDelayMs: 5 });
    const sentAtCancel = new Promise<number>((resolve) => {
      provider.on("cancel", () => resolve(provider.tokensGenerated));
    });
    conn.send(inferenceRequest("r1"));
    await conn.next("inferenceChunk", 2);
    conn.send({ case: "cancel", value: { requestId: "r1", reason: "consumer_disconnected" } });
    const sent = await sentAtCancel;
    expect(provider.cancelled).toEqual(["r1"]);
    expect(provider.inFlight).toBe(0);
    await delay(50);
    expect(provider.tokensGenerated).toBe(sent);
    expect(conn.all("inferenceChunk")).toHaveLength(sent);
    expect(conn.all("inferenceComplete")).toHaveLength(0);
    expect(conn.all("inferenceError")).toHaveLength(0);
  });

  it("fails before accepting, before the first token or after some tokens with the scripted error", async () => {
    const error = { httpStatus: 503, code: "overloaded", message: "busy", retryable: true };
    const scripts: Record<string, Script> = {
      a: { tokens: ["x", "y"], fail: { when: "before_accept" } },
      b: { tokens: ["x", "y"], fail: { when: "before_first_token", error } },
      c: { tokens: ["x", "y", "z", "w"], fail: { when: "after_tokens", afterTokens: 3 } },
    };
    const { provider, conn } = await connected({ script: (r) => scripts[r.requestId] ?? { tokens: [] } });
    for (const id of ["a", "b", "c"]) conn.send(inferenceRequest(id));
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((id) => conn.finished(id)));
    expect(a?.map((m) => m.message.case)).toEqual(["inferenceError"]);
    expect(a?.[0]?.message.value).toMatchObject({ httpStatus: 500, code: "provider_error", retryable: true });
    expect(b?.map((m) => m.message.case)).toEqual(["inferenceAccepted", "inferenceError"]);
    expect(b?.[1]?.message.value).toMatchObject(error);
    expect(textOf(c ?? [])).toBe("xyz");
    expect(c?.at(-1)?.message.value).toMatchObject({ code: "provider_error", retryable: false });
    expect(provider.failed.sort()).toEqual(["a", "b", "c"]);
    expect(provider.inFlight).toBe(0);
  });

  it("refuses a model it does not serve with a non-retryable 400", async () => {
    const { conn } = await connected();
    conn.send(inferenceRequest("r1", { model: "other" }));
    const [refusal] = await conn.finished("r1");
    expect(refusal?.message.value).toMatchObject({
      httpStatus: 400,
      code: "invalid_request_error",
      retryable: false,
    });
  });

  it("drops the whole connection on a scripted disconnect, like a killed process", async () => {
    const { provider, conn } = await scripted({
      tokens: ["a", "b", "c"],
      fail: { when: "after_tokens", afterTokens: 2, error: "disconnect" },
    });
    const disconnects: Disconnect[] = [];
    provider.on("disconnected", (d) => disconnects.push(d));
    conn.send(inferenceRequest("r1"));
    expect(await conn.whenClosed()).toBe("aborted");
    expect(textOf(conn.received)).toBe("ab");
    expect(conn.all("inferenceComplete")).toHaveLength(0);
    await conn.until(() => disconnects[0]);
    expect(disconnects[0]).toMatchObject({ reason: "disconnect", providerId: "prov-1" });
    expect(provider.connected).toBe(false);
  });

  it("stalls a request until it is cancelled, reporting the busy slot in heartbeats", async () => {
    const { provider, conn } = await scripted(
      { tokens: ["a"], fail: { when: "before_first_token", error: "stall" } },
      { heartbeatIntervalMs: 20 },
    );
    conn.send(inferenceRequest("r1"));
    await conn.next("inferenceAccepted");
    const serving = await conn.until(() => conn.all("heartbeat").find((h) => h.busySlots === 1));
    expect(serving.state).toBe(ProviderState.SERVING);
    expect(provider.inFlight).toBe(1);
    conn.send({ case: "cancel", value: { requestId: "r1" } });
    await conn.until(() => (provider.inFlight === 0 ? true : undefined));
    await delay(30);
    expect(conn.received.filter((m) => requestIdOf(m) === "r1").map((m) => m.message.case)).toEqual([
      "inferenceAccepted",
    ]);
  });

  it("refuses requests beyond max_batch with a retryable 503", async () => {
    const { conn } = await scripted(
      { tokens: ["a"], fail: { when: "before_first_token", error: "stall" } },
      { maxBatch: 1 },
    );
    conn.send(inferenceRequest("r1"));
    conn.send(inferenceRequest("r2"));
    const [refusal] = await conn.finished("r2");
    expect(refusal?.message.value).toMatchObject({ httpStatus: 503, retryable: true });
  });

  it("sends heartbeats at the configured interval with its live state", async () => {
    const { conn } = await connected({ heartbeatIntervalMs: 40, decodeTokensPerSecond: 80 });
    await conn.next("heartbeat", 5);
    const times = conn.received
      .map((m, i) => (m.message.case === "heartbeat" ? conn.arrivals[i] : undefined))
      .filter((t): t is number => t !== undefined);
    const gaps = times.slice(2).map((t, i) => t - (times[i + 1] ?? t));
    const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
    expect(mean).toBeGreaterThan(30);
    expect(mean).toBeLessThan(80);
    expect(conn.all("heartbeat")[0]).toMatchObject({
      state: ProviderState.IDLE,
      loadedModels: ["m1"],
      busySlots: 0,
      queueDepth: 0,
      decodeTokensPerSecond: 80,
      prefillTokensPerSecond: 500,
      memoryPressure: MemoryPressure.NORMAL,
      thermalState: ThermalState.NOMINAL,
    });
  });

  it("takes the heartbeat interval from the RegisterAck, and sends none when told not to", async () => {
    const coord = await coordinator();
    coord.ackHeartbeatMs = 30;
    const { conn } = await connected();
    await conn.next("heartbeat", 2);
    const silent = await connected({ sendHeartbeats: false });
    await delay(100);
    expect(silent.conn.all("heartbeat")).toHaveLength(0);
  });

  it("answers LoadModel and UnloadModel with STARTED then SUCCEEDED, or FAILED for an unknown model", async () => {
    const { provider, conn } = await connected();
    conn.send({ case: "unloadModel", value: { operationId: "op1", modelId: "m1" } });
    conn.send({ case: "loadModel", value: { operationId: "op2", modelId: "nope" } });
    await conn.next("loadModelStatus", 3);
    expect(conn.all("loadModelStatus").map((s) => [s.operationId, s.state])).toEqual([
      ["op1", LoadModelState.STARTED],
      ["op1", LoadModelState.SUCCEEDED],
      ["op2", LoadModelState.STARTED],
      ["op2", LoadModelState.FAILED],
    ]);
    expect(provider.loadModels).toEqual([
      { kind: "unload", operationId: "op1", modelId: "m1" },
      { kind: "load", operationId: "op2", modelId: "nope" },
    ]);
  });

  it("drains: refuses new work, finishes in-flight work, then ends its stream", async () => {
    const { provider, conn } = await scripted(
      { tokens: ["a", "b"], firstTokenDelayMs: 50 },
      { heartbeatIntervalMs: 10 },
    );
    conn.send(inferenceRequest("r1"));
    await conn.next("inferenceAccepted");
    conn.send({ case: "drain", value: { reason: "coordinator_shutdown", deadlineMs: 1_000 } });
    conn.send(inferenceRequest("r2"));
    const [refusal] = await conn.finished("r2");
    expect(refusal?.message.value).toMatchObject({ httpStatus: 503, retryable: true });
    await conn.until(() => conn.all("heartbeat").find((h) => h.state === ProviderState.DRAINING));
    expect(await conn.whenClosed()).toBe("graceful");
    expect(conn.received.at(-1)?.message.case).toBe("inferenceComplete");
    expect(provider.drains.map((d) => d.reason)).toEqual(["coordinator_shutdown"]);
  });

  it("reconnects with backoff after the coordinator drops the stream", async () => {
    const { provider, conn } = await connected({
      reconnect: true,
      reconnectBackoff: { initialMs: 10, maxMs: 20 },
      machineId: "machine-r",
    });
    const disconnects: Disconnect[] = [];
    provider.on("disconnected", (d) => disconnects.push(d));
    conn.end();
    const ack = await provider.waitForReconnect();
    expect(ack.providerId).toBe("prov-2");
    expect(provider.providerId).toBe("prov-2");
    expect(disconnects.map((d) => d.reason)).toEqual(["closed_by_coordinator"]);
    const second = await (await coordinator()).conn(1);
    expect((await second.next("register")).machineId).toBe("machine-r");
    second.send(inferenceRequest("r1"));
    await second.finished("r1");
  });

  it("stop() ends its stream gracefully and kill() aborts the connection, neither reconnecting", async () => {
    const graceful = await connected({ reconnect: true, reconnectBackoff: { initialMs: 1 } });
    await graceful.provider.stop();
    expect(await graceful.conn.whenClosed()).toBe("graceful");
    const killed = await connected({ reconnect: true, reconnectBackoff: { initialMs: 1 } });
    killed.provider.kill();
    expect(await killed.conn.whenClosed()).toBe("aborted");
    await delay(30);
    expect((await coordinator()).conns).toHaveLength(2);
    await expect(killed.provider.waitForReconnect()).rejects.toThrow(/stopped/);
  });

  it("speaks gRPC as well as Connect", async () => {
    const { conn } = await connected({ transport: "grpc" });
    conn.send(inferenceRequest("r1"));
    const messages = await conn.finished("r1");
    expect(messages.at(-1)?.message.case).toBe("inferenceComplete");
  });

  it("starts and stops several providers in parallel", async () => {
    const coord = await coordinator();
    const started = await startScriptedProviders(3, (i) => ({
      baseUrl: coord.baseUrl,
      models: [{ id: "m1" }],
      machineId: `machine-${i}`,
    }));
    providers.push(...started);
    expect(new Set(started.map((p) => p.providerId)).size).toBe(3);
    await stopAll(started);
    await Promise.all(coord.conns.map((c) => c.whenClosed()));
  });
});

describe("readSse", () => {
  const sse = (body: string, contentType = "text/event-stream") =>
    new Response(body, { headers: { "content-type": contentType } });

  it("parses data events and comments", async () => {
    const body = ': keep-alive\n\ndata: {"a":1}\n\ndata:x\ndata: y\n\ndata: [DONE]\n\n';
    expect(await readSse(sse(body))).toEqual({
      events: [{ data: '{"a":1}' }, { data: "x\ny" }, { data: "[DONE]" }],
      comments: ["keep-alive"],
    });
    expect(await readSse(sse(""))).toEqual({ events: [], comments: [] });
  });

  it.each([
    ["CRLF line endings", "data: a\r\n\r\n", /carriage return/],
    ["an event without its blank line", "data: a\n\ndata: b\n", /middle of an event/],
    ["a partial last line", "data: a\n\ndata: b", /middle of a line/],
    ["a field other than data", "event: x\ndata: a\n\n", /unexpected SSE field "event"/],
  ])("rejects %s", async (_name, body, message) => {
    await expect(readSse(sse(body))).rejects.toThrow(message);
    await expect(readSse(sse(body))).rejects.toBeInstanceOf(SseFormatError);
  });

  it("rejects a body that is not text/event-stream", async () => {
    await expect(readSse(sse("data: a\n\n", "application/json"))).rejects.toThrow(/content-type/);
  });
});
