import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createHandlerContext } from "@connectrpc/connect";
import { PROTOCOL_VERSION } from "@darkbloom/protocol";
import { type ConnectRequest, ConnectRequestSchema, ProviderService } from "@darkbloom/protocol/provider/v1";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ProviderRegistry } from "../routing/provider-registry.js";
import { createProviderService } from "./provider-service.js";
import { SessionManager } from "./session-manager.js";

const log = pino({ level: "silent" });
let sessions: SessionManager | undefined;

afterEach(() => sessions?.close());

const register = create(ConnectRequestSchema, {
  message: {
    case: "register",
    value: {
      protocolVersion: PROTOCOL_VERSION,
      machineId: "m-1",
      models: [{ id: "tiny" }],
      capacity: { maxBatch: 1 },
      encryptionPublicKey: new Uint8Array(32),
    },
  },
});

/** Runs Connect for the given inbound messages; returns the kinds of what went out and how the call ended. */
async function connect(
  inbound: () => AsyncGenerator<ConnectRequest>,
): Promise<{ out: (string | undefined)[]; error: unknown; registry: ProviderRegistry }> {
  const registry = new ProviderRegistry();
  sessions = new SessionManager(registry, { heartbeatIntervalMs: 60_000 }, log);
  const service = createProviderService(sessions, log, { registerTimeoutMs: 1_000 });
  const context = createHandlerContext({
    service: ProviderService,
    method: ProviderService.method.connect,
    protocolName: "connect",
    requestMethod: "POST",
    url: "http://127.0.0.1/darkbloom.provider.v1.ProviderService/Connect",
    requestSignal: new AbortController().signal,
  });
  const out: (string | undefined)[] = [];
  let error: unknown;
  try {
    for await (const m of service.connect(inbound(), context)) out.push(m.message?.case);
  } catch (e) {
    error = e;
  }
  return { out, error, registry };
}

describe("ProviderService.Connect", () => {
  it("ends a registered stream with the error that broke its inbound half, and evicts the provider", async () => {
    const { out, error, registry } = await connect(async function* () {
      yield register;
      // What the Connect adapter throws for an envelope that does not decode as a ConnectRequest.
      throw new ConnectError("parse binary: premature EOF", Code.Internal);
    });
    expect(out[0]).toBe("registerAck");
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.Internal);
    expect((error as ConnectError).rawMessage).toBe("parse binary: premature EOF");
    expect(registry.size).toBe(0);
  });

  it("ends a registered stream cleanly when the provider ends its half", async () => {
    const { out, error, registry } = await connect(async function* () {
      yield register;
    });
    expect(out[0]).toBe("registerAck");
    expect(error).toBeUndefined();
    expect(registry.size).toBe(0);
  });

  it("refuses a first message other than Register", async () => {
    const { out, error } = await connect(async function* () {
      yield create(ConnectRequestSchema, { message: { case: "heartbeat", value: {} } });
    });
    expect(out).toEqual([]);
    expect((error as ConnectError).code).toBe(Code.InvalidArgument);
  });
});
