import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type {
  DrainRequestSchema,
  ModelOperationRequestSchema,
  ModelOperationResponse,
  UntrustedRequestSchema,
} from "@darkbloom/protocol/cluster/v1";
import { type ForwardRequest, type ForwardResponse, PeerService } from "@darkbloom/protocol/cluster/v1";
import { KEEPALIVE, openSocket } from "@darkbloom/protocol/provider-client";
import { peerAuthorization } from "./peer-service.js";

/** What a replica asks of one peer. */
export interface PeerClient {
  forward(up: AsyncIterable<ForwardRequest>, signal: AbortSignal): AsyncIterable<ForwardResponse>;
  untrusted(request: MessageInitShape<typeof UntrustedRequestSchema>): Promise<unknown>;
  drain(request: MessageInitShape<typeof DrainRequestSchema>): Promise<unknown>;
  modelOperation(
    request: MessageInitShape<typeof ModelOperationRequestSchema>,
  ): Promise<ModelOperationResponse>;
}

/**
 * Clients of the other replicas, one HTTP/2 connection each (every forwarded request is a stream on
 * it), kept alive with PINGs so that a peer that vanished without a FIN fails its calls within
 * the keepalive timeout instead of leaving them open. Every call carries the peer token.
 */
export class PeerClients {
  private readonly peers = new Map<
    string,
    { client: Client<typeof PeerService>; sessions: Http2SessionManager }
  >();
  private readonly headers: Record<string, string>;

  constructor(peerToken: string) {
    this.headers = { authorization: peerAuthorization(peerToken) };
  }

  /** The client of the replica advertised at `url`. */
  of(url: string): PeerClient {
    let peer = this.peers.get(url);
    if (!peer) {
      const sessions = new Http2SessionManager(url, KEEPALIVE, {
        createConnection: (authority: URL) => openSocket(authority),
      });
      const client = createClient(
        PeerService,
        // No compression either way: requests and chunks are ciphertext, which does not compress
        // (gzip cost the hop more CPU than anything else).
        createConnectTransport({
          baseUrl: url,
          httpVersion: "2",
          sessionManager: sessions,
          acceptCompression: [],
        }),
      );
      peer = { client, sessions };
      this.peers.set(url, peer);
    }
    const { client } = peer;
    const headers = this.headers;
    return {
      forward: (up, signal) => client.forward(up, { signal, headers }),
      untrusted: (request) => client.untrusted(request, { headers, timeoutMs: 10_000 }),
      drain: (request) => client.drain(request, { headers, timeoutMs: 10_000 }),
      // The holder waits for the provider's outcome (MODEL_OPERATION_TIMEOUT_MS); a little more here.
      modelOperation: (request) => client.modelOperation(request, { headers, timeoutMs: 310_000 }),
    };
  }

  /** Forgets a peer that left (its connection closes). */
  forget(url: string): void {
    this.peers.get(url)?.sessions.abort();
    this.peers.delete(url);
  }

  close(): void {
    for (const url of [...this.peers.keys()]) this.forget(url);
  }
}
