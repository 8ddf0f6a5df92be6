/**
 * A stand-in coordinator for link tests that need no PostgreSQL: a real h2c Connect server speaking
 * ProviderService.Connect, which acknowledges every Register and lets the test send the provider any
 * message and read everything the provider sends, with the request bodies sealed as the coordinator
 * seals them and the chunks opened with each request's key.
 */
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Channel, decodeChunkPayload } from "@darkbloom/protocol";
import {
  type ChunkPayload,
  type ConnectRequest,
  type ConnectResponseSchema,
  type Endpoint,
  ProviderService,
  type Register,
} from "@darkbloom/protocol/provider/v1";
import { type BoxKey, BoxKeyPair } from "@darkbloom/protocol/sealed-box";

type ResponseInit = MessageInitShape<typeof ConnectResponseSchema>;

export const FAKE_PROVIDER_ID = "prov_fake";

export class FakeCoordinator {
  /** Everything every provider sent, in order. */
  readonly received: ConnectRequest[] = [];
  registers: Register[] = [];
  private readonly keys = new Map<string, BoxKey>();
  private readonly coordinatorKey = BoxKeyPair.generate();
  private stream: Channel<ResponseInit> | undefined;
  private readonly waiters = new Set<() => void>();

  private constructor(
    readonly url: string,
    private readonly server: http2.Http2Server,
    private readonly sessions: Set<http2.ServerHttp2Session>,
  ) {}

  static async start(): Promise<FakeCoordinator> {
    let fake: FakeCoordinator | undefined;
    const handler = connectNodeAdapter({
      routes: (router) =>
        router.service(ProviderService, {
          connect: (requests: AsyncIterable<ConnectRequest>) => (fake as FakeCoordinator).serve(requests),
        }),
    });
    const server = http2.createServer(handler);
    const sessions = new Set<http2.ServerHttp2Session>();
    server.on("session", (s) => {
      sessions.add(s);
      s.on("close", () => sessions.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    fake = new FakeCoordinator(`http://127.0.0.1:${port}`, server, sessions);
    return fake;
  }

  private async *serve(requests: AsyncIterable<ConnectRequest>): AsyncIterable<ResponseInit> {
    const out = new Channel<ResponseInit>();
    this.stream = out;
    void (async () => {
      try {
        for await (const m of requests) {
          this.received.push(m);
          if (m.message.case === "register") {
            this.registers.push(m.message.value);
            out.push({
              message: {
                case: "registerAck",
                value: { providerId: FAKE_PROVIDER_ID, heartbeatIntervalMs: 60_000, protocolVersion: 1 },
              },
            });
          }
          for (const wake of [...this.waiters]) wake();
        }
      } catch {
        // The provider went away.
      } finally {
        if (!out.isClosed) out.close();
      }
    })();
    yield* out;
  }

  /** Sends an InferenceRequest whose body is sealed to the provider's key, as the coordinator seals it. */
  request(
    requestId: string,
    model: string,
    endpoint: Endpoint,
    body: unknown,
    providerPublicKey: Uint8Array,
  ): Uint8Array {
    const bytes = Buffer.from(typeof body === "string" ? body : JSON.stringify(body), "utf8");
    const key = this.coordinatorKey.keyFor(providerPublicKey);
    this.keys.set(requestId, key);
    const { nonce, ciphertext } = key.seal(bytes);
    this.send({
      message: {
        case: "inferenceRequest",
        value: {
          requestId,
          model,
          endpoint,
          body: {
            case: "sealedBody",
            value: { senderPublicKey: this.coordinatorKey.publicKey, nonce, ciphertext },
          },
        },
      },
    });
    return bytes;
  }

  send(message: ResponseInit): void {
    if (!this.stream) throw new Error("no provider is connected");
    this.stream.push(message);
  }

  /** The messages about one request, in order. */
  about(requestId: string): ConnectRequest[] {
    return this.received.filter((m) => {
      const value = m.message.value as { requestId?: string } | undefined;
      return value?.requestId === requestId;
    });
  }

  /** A request's chunk payloads, opened with its key. */
  payloads(requestId: string): ChunkPayload[] {
    const key = this.keys.get(requestId);
    const out: ChunkPayload[] = [];
    for (const m of this.about(requestId)) {
      if (m.message.case !== "inferenceChunk") continue;
      const payload = m.message.value.payload;
      if (payload.case === "sealed" && key) out.push(decodeChunkPayload(key.open(payload.value)));
      else if (payload.case === "plaintext") out.push(payload.value);
    }
    return out;
  }

  /** Resolves once `done()` holds (checked whenever a message arrives), or rejects after `timeoutMs`. */
  waitFor(done: () => boolean, timeoutMs = 10_000, what = "the provider"): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!done()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  /** The terminal message of a request (complete or error), once it came. */
  terminal(requestId: string): ConnectRequest | undefined {
    return this.about(requestId).find(
      (m) => m.message.case === "inferenceComplete" || m.message.case === "inferenceError",
    );
  }

  async close(): Promise<void> {
    if (this.stream && !this.stream.isClosed) this.stream.close();
    for (const s of this.sessions) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
