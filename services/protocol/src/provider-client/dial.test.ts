import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import { dial } from "./dial.js";
import { Outbound } from "./outbound.js";

/** An h2c server that answers every stream with headers and then stays silent, as an idle coordinator does. */
async function silentServer(): Promise<{
  url: string;
  pings: () => number;
  sessions: http2.ServerHttp2Session[];
  close: () => Promise<void>;
}> {
  const server = http2.createServer();
  const sessions: http2.ServerHttp2Session[] = [];
  let pings = 0;
  server.on("session", (session) => {
    sessions.push(session);
    session.on("ping", () => pings++);
  });
  server.on("stream", (stream) => {
    stream.respond({ ":status": 200, "content-type": "application/connect+proto" });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    pings: () => pings,
    sessions,
    close: () =>
      new Promise<void>((resolve) => {
        for (const session of sessions) session.destroy();
        server.close(() => resolve());
      }),
  };
}

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe("dial", () => {
  it("keeps an open stream's connection alive with PINGs", async () => {
    const server = await silentServer();
    cleanups.push(server.close);
    const dialed = dial(server.url, { keepAlive: { pingIntervalMs: 50, pingTimeoutMs: 5_000 } });
    cleanups.push(() => dialed.close());
    const outbound = new Outbound();
    const responses = dialed.client.connect(outbound.messages())[Symbol.asyncIterator]();
    const ended = responses.next().catch((error: unknown) => error);
    await vi.waitFor(() => expect(server.pings()).toBeGreaterThanOrEqual(2), { timeout: 5_000 });
    dialed.close();
    await ended;
  });

  it("kill() drops the socket at once, as a network failure would", async () => {
    const server = await silentServer();
    cleanups.push(server.close);
    const dialed = dial(server.url);
    const outbound = new Outbound();
    const responses = dialed.client.connect(outbound.messages())[Symbol.asyncIterator]();
    const ended = responses.next().then(
      () => "ended",
      () => "failed",
    );
    await vi.waitFor(() => expect(server.sessions).toHaveLength(1), { timeout: 5_000 });
    const session = server.sessions[0] as http2.ServerHttp2Session;
    const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
    dialed.kill();
    await closed;
    expect(await ended).toBe("failed");
  });
});
