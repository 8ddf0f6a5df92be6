import { createHash } from "node:crypto";
import { create, fromBinary, type JsonObject, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { PROTOCOL_VERSION } from "@darkbloom/protocol";
import { ListProvidersRequestSchema, ListProvidersResponseSchema } from "@darkbloom/protocol/admin/v1";
import { InferenceService } from "@darkbloom/protocol/inference/v1";
import {
  ChunkPayloadSchema,
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  ConnectResponseSchema,
  ModelFeature,
} from "@darkbloom/protocol/provider/v1";
import { BoxKeyPair } from "@darkbloom/protocol/sealed-box";
import { ScriptedProvider } from "@darkbloom/testing";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  postJson,
  readJson,
  startTestCoordinator,
  TEST_ADMIN_KEY,
  type TestCoordinator,
} from "./testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "./testing/test-database.js";

let pg: TestPostgres;
let t: TestCoordinator;

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url);
});
afterAll(async () => {
  await t?.close();
  await pg?.stop();
});

/** A grpc-js client built only from the wire schema: an independent implementation of gRPC. */
function grpcClients(address: string) {
  const bin = <T>(schema: Parameters<typeof toBinary>[0]) => ({
    serialize: (m: T) => Buffer.from(toBinary(schema, m as never)),
    deserialize: (b: Buffer) => fromBinary(schema, b) as T,
  });
  const req = bin<ConnectRequest>(ConnectRequestSchema);
  const res = bin<ConnectResponse>(ConnectResponseSchema);
  const Provider = grpc.makeGenericClientConstructor(
    {
      connect: {
        path: "/darkbloom.provider.v1.ProviderService/Connect",
        requestStream: true,
        responseStream: true,
        requestSerialize: req.serialize,
        requestDeserialize: req.deserialize,
        responseSerialize: res.serialize,
        responseDeserialize: res.deserialize,
      },
    },
    "ProviderService",
  );
  const listReq = bin(ListProvidersRequestSchema);
  const listRes = bin(ListProvidersResponseSchema);
  const Admin = grpc.makeGenericClientConstructor(
    {
      listProviders: {
        path: "/darkbloom.admin.v1.AdminService/ListProviders",
        requestStream: false,
        responseStream: false,
        requestSerialize: listReq.serialize,
        requestDeserialize: listReq.deserialize,
        responseSerialize: listRes.serialize,
        responseDeserialize: listRes.deserialize,
      },
    },
    "AdminService",
  );
  const creds = grpc.credentials.createInsecure();
  return { provider: new Provider(address, creds), admin: new Admin(address, creds) };
}

describe("interoperability", () => {
  it("a @grpc/grpc-js provider registers, serves a request, and is listed through grpc-js admin calls", async () => {
    const { provider, admin } = grpcClients(new URL(t.url).host);
    const call = (
      provider as unknown as { connect(): grpc.ClientDuplexStream<ConnectRequest, ConnectResponse> }
    ).connect();
    const inbound: ConnectResponse[] = [];
    const waiters: Array<() => void> = [];
    call.on("data", (m: ConnectResponse) => {
      inbound.push(m);
      for (const w of waiters.splice(0)) w();
    });
    call.on("error", () => undefined);
    const next = async (kind: ConnectResponse["message"]["case"]) => {
      for (;;) {
        const i = inbound.findIndex((m) => m.message.case === kind);
        if (i >= 0) return inbound.splice(i, 1)[0] as ConnectResponse;
        await new Promise<void>((r) => waiters.push(r));
      }
    };
    const keys = BoxKeyPair.generate();
    call.write(
      create(ConnectRequestSchema, {
        message: {
          case: "register",
          value: {
            protocolVersion: PROTOCOL_VERSION,
            daemonVersion: "9.9.9",
            machineId: "grpc-js-machine",
            models: [{ id: "grpc-model", contextLength: 1024 }],
            capacity: { maxBatch: 2, maxContext: 1024 },
            encryptionPublicKey: keys.publicKey,
          },
        },
      }),
    );
    const ack = await next("registerAck");
    const providerId = ack.message.case === "registerAck" ? ack.message.value.providerId : "";
    expect(providerId).toMatch(/^prov_/);

    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${TEST_ADMIN_KEY}`);
    const listed = await new Promise<{ providers: Array<{ providerId: string; daemonVersion: string }> }>(
      (resolve, reject) =>
        (
          admin as unknown as {
            listProviders: (r: unknown, m: grpc.Metadata, cb: (e: Error | null, v: never) => void) => void;
          }
        ).listProviders(create(ListProvidersRequestSchema, {}), metadata, (e, v) =>
          e ? reject(e) : resolve(v),
        ),
    );
    expect(listed.providers).toContainEqual(expect.objectContaining({ providerId, daemonVersion: "9.9.9" }));

    const pending = postJson(t.url, "/v1/chat/completions", t.apiKey, {
      model: "grpc-model",
      messages: [{ role: "user", content: "hi" }],
    });
    const request = await next("inferenceRequest");
    if (request.message.case !== "inferenceRequest") throw new Error("unreachable");
    const requestId = request.message.value.requestId;
    // The body arrives sealed to the key registered above; chunks go back sealed with the same box key.
    const sealedBody = request.message.value.body;
    if (sealedBody.case !== "sealedBody") throw new Error(`expected a sealed body, got ${sealedBody.case}`);
    const key = keys.keyFor(sealedBody.value.senderPublicKey);
    expect(JSON.parse(key.open(sealedBody.value).toString("utf8")).messages[0].content).toBe("hi");
    const send = (message: MessageInitShape<typeof ConnectRequestSchema>["message"]) =>
      call.write(create(ConnectRequestSchema, { message }));
    send({ case: "inferenceAccepted", value: { requestId } });
    send({
      case: "inferenceChunk",
      value: {
        requestId,
        sequence: 0n,
        payload: {
          case: "sealed",
          value: key.seal(
            toBinary(ChunkPayloadSchema, create(ChunkPayloadSchema, { text: "from grpc", tokenCount: 2 })),
          ),
        },
      },
    });
    send({
      case: "inferenceComplete",
      value: {
        requestId,
        usage: { promptTokens: 3, completionTokens: 2 },
        choices: [{ index: 0, finishReason: "stop" }],
      },
    });
    const res = await pending;
    expect(res.status).toBe(200);
    expect((await readJson(res)).choices[0].message.content).toBe("from grpc");

    call.end();
    (provider as grpc.Client).close();
    (admin as grpc.Client).close();
  });

  it("the typed Connect inference service serves unary and streamed calls over HTTP/1.1 and HTTP/2", async () => {
    const p = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "tiny" }],
      script: () => ({ tokens: ["a", "b", "c"] }),
    });
    await p.start();
    try {
      for (const transport of [
        createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" }),
        createGrpcTransport({ baseUrl: t.url }),
      ]) {
        const client = createClient(InferenceService, transport);
        const headers = { authorization: `Bearer ${t.apiKey}` };
        const whole = await client.createChatCompletion(
          { model: "tiny", messages: [{ role: "user", content: "hi" }], sampling: { maxTokens: 10 } },
          { headers },
        );
        expect(whole.choices[0]?.message?.content).toBe("abc");
        expect(whole.usage?.completionTokens).toBe(3);
        expect(whole.provider?.providerId).toBe(p.providerId);
        // The proof covers the JSON the coordinator built from the call; unsigned: no signing key.
        const proof = whole.darkbloom;
        expect(proof?.providerId).toBe(p.providerId);
        expect(
          createHash("sha256")
            .update(proof?.requestBody ?? new Uint8Array())
            .digest(),
        ).toEqual(Buffer.from(proof?.requestSha256 ?? []));
        expect(JSON.parse(Buffer.from(proof?.requestBody ?? []).toString()).messages[0].content).toBe("hi");
        expect(proof?.signature).toHaveLength(0);
        let text = "";
        let finish = "";
        for await (const d of client.streamCompletion({ model: "tiny", prompt: "x" }, { headers })) {
          text += d.text;
          if (d.finishReason) finish = d.finishReason;
        }
        expect(text).toBe("abc");
        expect(finish).toBe("stop");
        const models = await client.listModels({}, { headers });
        expect(models.models.map((m) => m.id)).toContain("tiny");
        await expect(client.listModels({})).rejects.toThrow(/API key/);
        await expect(client.createCompletion({ model: "missing", prompt: "x" }, { headers })).rejects.toThrow(
          /does not exist/,
        );
      }
    } finally {
      await p.stop();
    }
  });

  it("the typed Connect inference service asks for structured outputs with the body the HTTP route takes", async () => {
    const p = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "tiny", features: [ModelFeature.GRAMMAR] }],
      script: () => ({ tokens: ['{"colour": ', '"red"}'] }),
    });
    await p.start();
    try {
      const client = createClient(InferenceService, createGrpcTransport({ baseUrl: t.url }));
      const headers = { authorization: `Bearer ${t.apiKey}` };
      const schema: JsonObject = {
        type: "object",
        properties: { colour: { enum: ["red", "green"] } },
        required: ["colour"],
        additionalProperties: false,
      };
      const ask = (s: JsonObject) =>
        client.createChatCompletion(
          {
            model: "tiny",
            messages: [{ role: "user", content: "a colour" }],
            sampling: {
              responseFormat: {
                format: { case: "jsonSchema", value: { name: "pick", strict: true, schema: s } },
              },
            },
          },
          { headers },
        );
      const whole = await ask(schema);
      expect(JSON.parse(whole.choices[0]?.message?.content ?? "")).toEqual({ colour: "red" });
      const body = JSON.parse(Buffer.from(whole.darkbloom?.requestBody ?? []).toString());
      expect(body.response_format).toEqual({
        type: "json_schema",
        json_schema: { name: "pick", strict: true, schema },
      });
      const patterned = { ...schema, properties: { colour: { type: "string", pattern: "\\bred" } } };
      await expect(ask(patterned)).rejects.toMatchObject({
        code: Code.InvalidArgument,
        rawMessage: expect.stringContaining("a word boundary"),
      });
    } finally {
      await p.stop();
    }
  });
});
