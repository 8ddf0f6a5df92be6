// Socket-level attacks for the malformed-input drill: connections that never finish their request
// (slowloris), more connections than one address may hold, and a consumer that never reads its
// response. Each attack records what the coordinator did to it, for the drill to judge.
import http2 from "node:http2";
import net from "node:net";

/** How a slow connection misbehaves. */
export type SlowKind =
  | "one-byte" // "G" and nothing more
  | "partial-preface" // the start of the HTTP/2 preface and nothing more
  | "dribble" // a request line, then a header line every 250 ms, never the blank line
  | "no-body-keyed" // a POST with an API key and Content-Length 1000, 9 bytes of body
  | "no-body-anonymous" // the same without a key
  | "h2-no-end-stream"; // an h2c stream with part of a body and no END_STREAM

export const SLOW_KINDS: readonly SlowKind[] = [
  "one-byte",
  "partial-preface",
  "dribble",
  "no-body-keyed",
  "no-body-anonymous",
  "h2-no-end-stream",
];

export interface SlowOutcome {
  kind: SlowKind;
  from: string;
  /** ms from the connection being established to its closing; Infinity if it never connected. */
  lifetimeMs: number;
  /** HTTP/1.1: the first line of what the server sent; HTTP/2: ":status <n>" of the stream's answer. */
  answer: string;
  /** Nothing at all came back. */
  silent: boolean;
}

/** One slow connection from `from`; resolves when the server has closed it (or `giveUpMs` passed). */
export function slowConnection(
  url: string,
  from: string,
  kind: SlowKind,
  apiKey: string,
  giveUpMs: number,
): Promise<SlowOutcome> {
  return kind === "h2-no-end-stream"
    ? slowStream(url, from, apiKey, giveUpMs)
    : slowSocket(url, from, kind, apiKey, giveUpMs);
}

function slowSocket(
  url: string,
  from: string,
  kind: Exclude<SlowKind, "h2-no-end-stream">,
  apiKey: string,
  giveUpMs: number,
): Promise<SlowOutcome> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port), localAddress: from });
    let received = "";
    let connectedAt = 0;
    let drip: NodeJS.Timeout | undefined;
    const giveUp = setTimeout(() => socket.destroy(), giveUpMs);
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      received += d;
    });
    socket.on("error", () => undefined);
    socket.once("close", () => {
      clearTimeout(giveUp);
      clearInterval(drip);
      resolve({
        kind,
        from,
        lifetimeMs: connectedAt ? performance.now() - connectedAt : Number.POSITIVE_INFINITY,
        answer: received.split("\r\n", 1)[0] ?? "",
        silent: received === "",
      });
    });
    socket.once("connect", () => {
      connectedAt = performance.now();
      const post = (key: boolean) =>
        "POST /v1/chat/completions HTTP/1.1\r\nHost: drill\r\nContent-Type: application/json\r\n" +
        `${key ? `Authorization: Bearer ${apiKey}\r\n` : ""}Content-Length: 1000\r\n\r\n{"model":`;
      switch (kind) {
        case "one-byte":
          socket.write("G");
          break;
        case "partial-preface":
          socket.write("PRI * HTTP/2.0\r\n");
          break;
        case "dribble":
          socket.write("GET /healthz HTTP/1.1\r\n");
          drip = setInterval(() => {
            if (!socket.destroyed) socket.write("X-Drip: 1\r\n");
          }, 250);
          break;
        case "no-body-keyed":
          socket.write(post(true));
          break;
        case "no-body-anonymous":
          socket.write(post(false));
          break;
      }
    });
  });
}

function slowStream(url: string, from: string, apiKey: string, giveUpMs: number): Promise<SlowOutcome> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    let connectedAt = 0;
    let answer = "";
    const session = http2.connect(url, {
      createConnection: () => {
        const socket = net.connect({ host: hostname, port: Number(port), localAddress: from });
        socket.once("connect", () => {
          connectedAt = performance.now();
        });
        return socket;
      },
    });
    session.on("error", () => undefined);
    const finish = () => {
      clearTimeout(giveUp);
      session.destroy();
      resolve({
        kind: "h2-no-end-stream",
        from,
        lifetimeMs: connectedAt ? performance.now() - connectedAt : Number.POSITIVE_INFINITY,
        answer,
        silent: answer === "",
      });
    };
    const giveUp = setTimeout(finish, giveUpMs);
    // A refused connection closes the session; an admitted one ends when the stream is reset.
    session.once("close", finish);
    const stream = session.request({
      ":method": "POST",
      ":path": "/v1/chat/completions",
      authorization: `Bearer ${apiKey}`,
      "content-type": "application/json",
    });
    stream.on("error", () => undefined);
    stream.once("response", (h) => {
      answer = `:status ${h[":status"]}`;
    });
    stream.resume();
    stream.once("close", finish);
    stream.write('{"model":');
  });
}

/** darkbloom_connection_limit_hits_total by limit, from the coordinator's /metrics exposition. */
export function limitHits(text: string): Record<string, number> {
  const hits: Record<string, number> = {};
  for (const m of text.matchAll(/^darkbloom_connection_limit_hits_total\{limit="(\w+)"\} (\d+)/gm)) {
    hits[m[1] as string] = Number(m[2]);
  }
  return hits;
}

export interface UnreadOutcome {
  status: number;
  /** The stream was reset by the server (with this code) before the client read anything. */
  rstCode: number | undefined;
  /** ms from the response headers to the reset. */
  afterMs: number;
}

/**
 * An h2c streaming request whose consumer reads nothing after the response headers (HTTP/2 flow
 * control then holds the response at the coordinator); resolves when the server resets the stream.
 */
export function unreadStream(
  url: string,
  apiKey: string,
  body: unknown,
  giveUpMs: number,
): Promise<UnreadOutcome> {
  return new Promise((resolve) => {
    // A small stream window: the response stalls after a few tokens, however slowly the provider
    // generates (a loaded machine decodes the tiny model many times slower).
    const session = http2.connect(url, { settings: { initialWindowSize: 1024 } });
    session.on("error", () => undefined);
    let status = 0;
    let headersAt = 0;
    const stream = session.request({
      ":method": "POST",
      ":path": "/v1/chat/completions",
      authorization: `Bearer ${apiKey}`,
      "content-type": "application/json",
    });
    stream.on("error", () => undefined);
    const finish = (rstCode: number | undefined) => {
      clearTimeout(giveUp);
      session.destroy();
      resolve({ status, rstCode, afterMs: headersAt ? performance.now() - headersAt : Number.NaN });
    };
    const giveUp = setTimeout(() => finish(undefined), giveUpMs);
    stream.once("response", (h) => {
      status = Number(h[":status"]);
      headersAt = performance.now();
      stream.pause();
    });
    stream.once("close", () => finish(stream.rstCode));
    stream.end(JSON.stringify(body));
  });
}
