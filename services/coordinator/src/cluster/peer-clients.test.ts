import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Channel } from "@darkbloom/protocol";
import {
  type ForwardRequest,
  ForwardRequestSchema,
  type ForwardResponse,
  PeerService,
} from "@darkbloom/protocol/cluster/v1";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { PeerClients, type PeerTokens } from "./peer-clients.js";

// PeerClients during a rotation, against a stand-in PeerService whose accepted tokens the tests
// change: which token each call carried, that a refused one is sent again with the other, and that
// the choice sticks per peer. The real replicas: peer-token-rotation.test.ts.

const OLD = "old-peer-token-0123456789abcdef";
const NEW = "new-peer-token-0123456789abcdef";

interface StandIn {
  url: string;
  /** The tokens it accepts now. */
  accepted: Set<string>;
  /** The token each call carried, in order ("none" without one). */
  presented: string[];
  /** The request ids of the ForwardStarts it admitted. */
  started: string[];
  close(): Promise<void>;
}

const servers: StandIn[] = [];
const clients: PeerClients[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) await s.close();
});

async function standIn(accepted: string[]): Promise<StandIn> {
  const state = { accepted: new Set(accepted), presented: [] as string[], started: [] as string[] };
  const authorize = (context: HandlerContext) => {
    const token = (context.requestHeader.get("authorization") ?? "").replace(/^Bearer /, "");
    state.presented.push(token || "none");
    if (!state.accepted.has(token)) throw new ConnectError("refused", Code.Unauthenticated);
  };
  const handler = connectNodeAdapter({
    routes: (router) =>
      router.service(PeerService, {
        async *forward(requests: AsyncIterable<ForwardRequest>, context: HandlerContext) {
          authorize(context);
          for await (const r of requests) {
            if (r.message.case !== "start") continue;
            const requestId = r.message.value.request?.requestId ?? "";
            state.started.push(requestId);
            yield { message: { case: "admitted", value: { rows: 0 } } };
            yield { message: { case: "lost", value: { reason: `served ${requestId}` } } };
            return;
          }
        },
        async untrusted(_request, context) {
          authorize(context);
          return {};
        },
        async drain(_request, context) {
          authorize(context);
          return {};
        },
      }),
  });
  const server = http2.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const s: StandIn = {
    url: `http://127.0.0.1:${port}`,
    ...state,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  servers.push(s);
  return s;
}

function peerClients(tokens: PeerTokens, log?: pino.Logger): PeerClients {
  const c = new PeerClients(tokens, log);
  clients.push(c);
  return c;
}

const untrusted = { providerId: "prov_x", code: "test", message: "test" };

/** One forwarded request through `clients` to `url`: the messages that came back. */
async function forward(clients: PeerClients, url: string, requestId: string): Promise<ForwardResponse[]> {
  const up = new Channel<ForwardRequest>();
  up.push(
    create(ForwardRequestSchema, {
      message: { case: "start", value: { providerId: "prov_x", request: { requestId, model: "m" } } },
    }),
  );
  const out: ForwardResponse[] = [];
  try {
    for await (const m of clients.of(url).forward(up, new AbortController().signal)) out.push(m);
  } finally {
    up.close();
  }
  return out;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "Ok";
  } catch (e) {
    return Code[ConnectError.from(e).code];
  }
}

describe("PeerClients during a peer token rotation", () => {
  it("sends a peer that refuses the current token the previous one, keeps it, and switches back", async () => {
    const peer = await standIn([OLD]);
    const c = peerClients({ current: NEW, previous: OLD });
    await c.of(peer.url).untrusted(untrusted);
    expect(peer.presented).toEqual([NEW, OLD]);
    await c.of(peer.url).drain({ providerId: "prov_x", reason: "test" });
    expect(peer.presented).toEqual([NEW, OLD, OLD]); // kept: no refused call any more
    // The peer restarted with the new token: it refuses the previous one, and gets the current again.
    peer.accepted.clear();
    peer.accepted.add(NEW);
    await c.of(peer.url).untrusted(untrusted);
    await c.of(peer.url).untrusted(untrusted);
    expect(peer.presented).toEqual([NEW, OLD, OLD, OLD, NEW, NEW]);
  });

  it("sends a forwarded request refused at the door again with the other token, replaying its start", async () => {
    const peer = await standIn([OLD]);
    const other = await standIn([NEW]);
    const c = peerClients({ current: NEW, previous: OLD });
    const answer = await forward(c, peer.url, "req-1");
    expect(answer.map((m) => m.message.case)).toEqual(["admitted", "lost"]);
    expect(answer[1]?.message.value).toMatchObject({ reason: "served req-1" });
    expect(peer.presented).toEqual([NEW, OLD]);
    expect(peer.started).toEqual(["req-1"]);
    await forward(c, peer.url, "req-2");
    expect(peer.presented).toEqual([NEW, OLD, OLD]);
    // The choice is per peer: another one still gets the current token first.
    await forward(c, other.url, "req-3");
    expect(other.presented).toEqual([NEW]);
  });

  it("gives up after both tokens are refused, with Unauthenticated (a forwarded request is routed again)", async () => {
    const peer = await standIn(["unrelated-token-0123456789abcdef"]);
    const c = peerClients({ current: NEW, previous: OLD });
    expect(await codeOf(c.of(peer.url).untrusted(untrusted))).toBe("Unauthenticated");
    expect(peer.presented).toEqual([NEW, OLD]);
    expect(await codeOf(forward(c, peer.url, "req-1"))).toBe("Unauthenticated");
    expect(peer.presented).toHaveLength(4);
    expect(peer.started).toEqual([]);
  });

  it("sends only the current token without a previous one", async () => {
    const peer = await standIn([OLD]);
    const c = peerClients({ current: NEW });
    expect(await codeOf(c.of(peer.url).untrusted(untrusted))).toBe("Unauthenticated");
    expect(await codeOf(forward(c, peer.url, "req-1"))).toBe("Unauthenticated");
    expect(peer.presented).toEqual([NEW, NEW]);
  });

  it("says when it switches a peer's token, never what the token is", async () => {
    const peer = await standIn([OLD]);
    const lines: string[] = [];
    const log = pino({ level: "debug" }, { write: (line: string) => void lines.push(line) });
    const c = peerClients({ current: NEW, previous: OLD }, log);
    await c.of(peer.url).untrusted(untrusted);
    peer.accepted.clear();
    peer.accepted.add(NEW);
    await forward(c, peer.url, "req-1");
    expect(lines).toHaveLength(2);
    expect(lines.join("")).toContain(peer.url);
    for (const secret of [NEW, OLD]) expect(lines.join("")).not.toContain(secret);
  });
});
