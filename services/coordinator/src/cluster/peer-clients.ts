import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type {
  DrainRequestSchema,
  ModelOperationRequestSchema,
  ModelOperationResponse,
  UntrustedRequestSchema,
} from "@darkbloom/protocol/cluster/v1";
import { type ForwardRequest, type ForwardResponse, PeerService } from "@darkbloom/protocol/cluster/v1";
import { GuardedSessionManager, KEEPALIVE, openSocket } from "@darkbloom/protocol/provider-client";
import type { Logger } from "../log.js";
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

/** Which of this replica's peer tokens a peer is sent. */
type TokenChoice = "current" | "previous";

/** The peer tokens: `current` is sent first; `previous`, during a rotation, to peers refusing it. */
export interface PeerTokens {
  current: string;
  previous?: string | undefined;
}

interface Peer {
  client: Client<typeof PeerService>;
  sessions: GuardedSessionManager;
  /** The token this peer last accepted (or, until it refused one, the current token). */
  token: TokenChoice;
}

/**
 * Clients of the other replicas, one HTTP/2 connection each (every forwarded request is a stream on
 * it), kept alive with PINGs so that a peer that vanished without a FIN fails its calls within
 * the keepalive timeout instead of leaving them open. Every call carries a peer token.
 *
 * During a rotation (a previous token given) the replicas do not all know the same token: one
 * started before it knows only the previous one. A peer answering Unauthenticated is then sent the
 * other token, at once for the refused call (a forwarded request refused at the door never reached
 * the holder's provider, so it is sent again, unary calls once more) and from then on for every
 * call to that peer; a peer that later refuses that one (it restarted with the new token) is
 * switched back the same way. Nothing here logs a token.
 */
export class PeerClients {
  private readonly peers = new Map<string, Peer>();
  private readonly headers: Record<TokenChoice, Record<string, string>> | undefined;
  private readonly current: Record<string, string>;

  constructor(
    tokens: PeerTokens,
    private readonly log?: Logger,
  ) {
    this.current = { authorization: peerAuthorization(tokens.current) };
    this.headers =
      tokens.previous === undefined || tokens.previous === tokens.current
        ? undefined
        : { current: this.current, previous: { authorization: peerAuthorization(tokens.previous) } };
  }

  /** The client of the replica advertised at `url`. */
  of(url: string): PeerClient {
    let peer = this.peers.get(url);
    if (!peer) {
      const sessions = new GuardedSessionManager(url, KEEPALIVE, {
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
      peer = { client, sessions, token: "current" };
      this.peers.set(url, peer);
    }
    const { client } = peer;
    const known = peer;
    const unary = <T>(call: (headers: Record<string, string>) => Promise<T>): Promise<T> =>
      this.unary(url, known, call);
    return {
      // Outside a rotation the call is the client's own stream: no wrapper on the hot path.
      forward: (up, signal) =>
        this.headers === undefined
          ? client.forward(up, { signal, headers: this.current })
          : this.forward(url, known, this.headers, up, signal),
      untrusted: (request) => unary((headers) => client.untrusted(request, { headers, timeoutMs: 10_000 })),
      drain: (request) => unary((headers) => client.drain(request, { headers, timeoutMs: 10_000 })),
      // The holder waits for the provider's outcome (MODEL_OPERATION_TIMEOUT_MS); a little more here.
      modelOperation: (request) =>
        unary((headers) => client.modelOperation(request, { headers, timeoutMs: 310_000 })),
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

  /** The token to send `peer` and its header (always the current one outside a rotation). */
  private choice(peer: Peer): { token: TokenChoice; headers: Record<string, string> } {
    if (this.headers === undefined) return { token: "current", headers: this.current };
    return { token: peer.token, headers: this.headers[peer.token] };
  }

  /**
   * `peer` refused `token`: whether another one is worth a try. The peer is switched to the other
   * token unless a concurrent call already switched it (its refusal must not switch it back).
   */
  private refused(url: string, peer: Peer, token: TokenChoice, error: unknown): boolean {
    if (this.headers === undefined || ConnectError.from(error).code !== Code.Unauthenticated) return false;
    if (peer.token === token) {
      peer.token = token === "current" ? "previous" : "current";
      this.log?.warn(
        { peer: url, token: peer.token },
        "a peer refused this replica's peer token: sending it the other one (a rotation is rolling out)",
      );
    }
    return true;
  }

  private async unary<T>(
    url: string,
    peer: Peer,
    call: (headers: Record<string, string>) => Promise<T>,
  ): Promise<T> {
    const first = this.choice(peer);
    try {
      return await call(first.headers);
    } catch (error) {
      if (!this.refused(url, peer, first.token, error) || this.headers === undefined) throw error;
      const other: TokenChoice = first.token === "current" ? "previous" : "current";
      try {
        return await call(this.headers[other]);
      } catch (again) {
        this.refused(url, peer, other, again);
        throw again;
      }
    }
  }

  /**
   * PeerService.Forward, sent again with the other token when the peer refuses the first before
   * answering anything: what the caller has written so far is replayed, as it never reached the
   * holder's provider. Once the peer answered, its stream is passed through as it is.
   */
  private async *forward(
    url: string,
    peer: Peer,
    headers: Record<TokenChoice, Record<string, string>>,
    up: AsyncIterable<ForwardRequest>,
    signal: AbortSignal,
  ): AsyncIterable<ForwardResponse> {
    const first = peer.token;
    const requests = new Replayable(up);
    let answered = false;
    try {
      for await (const m of peer.client.forward(requests.replay(), { signal, headers: headers[first] })) {
        answered = true;
        yield m;
      }
      return;
    } catch (error) {
      if (answered || signal.aborted || !this.refused(url, peer, first, error)) throw error;
    }
    const other: TokenChoice = first === "current" ? "previous" : "current";
    try {
      yield* peer.client.forward(requests.replay(), { signal, headers: headers[other] });
    } catch (error) {
      this.refused(url, peer, other, error);
      throw error;
    }
  }
}

/**
 * An async iterable read once from its source and replayable from its start by any number of
 * readers, so that a refused call's requests can be sent again. It keeps every element: a forwarded
 * call's requests are its start and at most a cancel.
 */
class Replayable<T> {
  private readonly seen: T[] = [];
  private readonly source: AsyncIterator<T>;
  private pulling: Promise<void> | undefined;
  private ended = false;

  constructor(source: AsyncIterable<T>) {
    this.source = source[Symbol.asyncIterator]();
  }

  async *replay(): AsyncGenerator<T> {
    for (let i = 0; ; i++) {
      while (i >= this.seen.length) {
        if (this.ended) return;
        await this.pull();
      }
      yield this.seen[i] as T;
    }
  }

  /** The source's next element, pulled once however many readers wait for it. */
  private pull(): Promise<void> {
    this.pulling ??= this.source.next().then(
      (r) => {
        this.pulling = undefined;
        if (r.done) this.ended = true;
        else this.seen.push(r.value);
      },
      (error: unknown) => {
        this.pulling = undefined;
        throw error;
      },
    );
    return this.pulling;
  }
}
