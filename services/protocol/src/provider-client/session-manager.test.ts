import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterEach, expect, it } from "vitest";
import { GuardedSessionManager } from "./session-manager.js";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** An h2c server that answers every stream and ends it, keeping the connection open. */
async function answeringServer(): Promise<{ url: string; sessions: http2.ServerHttp2Session[] }> {
  const server = http2.createServer();
  const sessions: http2.ServerHttp2Session[] = [];
  server.on("session", (session) => sessions.push(session));
  server.on("stream", (stream) => {
    stream.respond({ ":status": 200 });
    stream.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const session of sessions) session.destroy();
        server.close(() => resolve());
      }),
  );
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, sessions };
}

it("does not crash the process when a GOAWAY closes an idle connection that the manager has left (connect-es#1768)", async () => {
  const server = await answeringServer();
  const manager = new GuardedSessionManager(server.url);
  const stream = await manager.request("POST", "/stream", {}, {});
  const session = stream.session as http2.ClientHttp2Session;
  stream.resume();
  stream.end();
  await new Promise((resolve) => stream.once("close", resolve));
  // A coordinator shutting down sends GOAWAY on a connection whose stream has ended: the manager
  // destroys the connection with an error Node emits once the socket has closed. The provider aborts
  // the manager in between (its stream ended), which removes the manager's own error listeners, so
  // without the guard that error is an uncaught exception (and fails this run).
  session.once("goaway", () => manager.abort());
  server.sessions[0]?.goaway(http2.constants.NGHTTP2_NO_ERROR);
  await new Promise((resolve) => session.once("close", resolve));
  await new Promise((resolve) => setImmediate(resolve));
  expect(session.destroyed).toBe(true);
  expect(manager.state()).toBe("closed");
});

it("still reaches a new connection after the guarded one closed", async () => {
  const server = await answeringServer();
  const manager = new GuardedSessionManager(server.url);
  cleanups.push(() => manager.abort());
  const first = await manager.request("POST", "/stream", {}, {});
  first.resume();
  first.end();
  await new Promise((resolve) => first.once("close", resolve));
  manager.abort();
  const second = await manager.request("POST", "/stream", {}, {});
  expect(second.session).not.toBe(first.session);
  second.resume();
  second.end();
  const status = await new Promise<number | undefined>((resolve) =>
    second.once("response", (headers) => resolve(headers[":status"])),
  );
  expect(status).toBe(200);
  await new Promise((resolve) => second.once("close", resolve));
});
