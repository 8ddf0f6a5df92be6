import { Code } from "@connectrpc/connect";
import { ScriptedProvider } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { postJson, readJson, startTestCoordinator, waitFor } from "./testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "./testing/test-database.js";

let pg: TestPostgres;
beforeAll(async () => {
  pg = await startTestPostgres();
});
afterAll(async () => {
  await pg?.stop();
});

const chat = { model: "tiny", messages: [{ role: "user", content: "hi" }], stream: true };

describe("stream lifecycle", () => {
  it("keeps a silent stream alive with SSE comments, and commits headers when it does", async () => {
    const t = await startTestCoordinator(pg.url, { keepAliveIntervalMs: 100 });
    const p = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "tiny" }],
      script: () => ({ tokens: ["a", "b"], firstTokenDelayMs: 450, interTokenDelayMs: 300 }),
    });
    await p.start();
    try {
      const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat);
      expect(res.status).toBe(200);
      // Headers were committed by the keep-alive before the first token, naming the provider.
      expect(res.headers.get("x-provider-id")).toBe(p.providerId);
      const raw = await res.text();
      const comments = raw.split("\n\n").filter((block) => block.startsWith(": keep-alive"));
      expect(comments.length).toBeGreaterThanOrEqual(3);
      expect(raw.endsWith("data: [DONE]\n\n")).toBe(true);
      expect(raw.match(/data: \[DONE\]/g)).toHaveLength(1);
    } finally {
      await p.stop();
      await t.close();
    }
  });

  it("drains providers on shutdown: in-flight work finishes, then streams close", async () => {
    const t = await startTestCoordinator(pg.url);
    const p = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "tiny" }],
      script: () => ({ tokens: ["x", "y", "z"], interTokenDelayMs: 100 }),
    });
    await p.start();
    try {
      const pending = postJson(t.url, "/v1/chat/completions", t.apiKey, { ...chat, stream: false });
      await waitFor(() => p.received.length === 1, 3_000, "dispatch");
      const closing = t.coordinator.close({ drainMs: 5_000 });
      const res = await pending;
      expect(res.status).toBe(200);
      expect((await readJson(res)).choices[0].message.content).toBe("xyz");
      await closing;
      expect(p.drains).toHaveLength(1);
      expect(p.drains[0]?.reason).toBe("coordinator_shutdown");
    } finally {
      await p.stop().catch(() => undefined);
    }
  });

  it("refuses registrations while it drains (Unavailable: the daemon retries, and reaches another replica)", async () => {
    const t = await startTestCoordinator(pg.url);
    // A request that never ends holds the drain open for its whole deadline.
    const p = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "tiny" }],
      script: () => ({ tokens: ["x"], fail: { when: "before_first_token", error: "stall" } }),
    });
    await p.start();
    try {
      const pending = postJson(t.url, "/v1/chat/completions", t.apiKey, { ...chat, stream: false }).catch(
        () => undefined,
      );
      await waitFor(() => p.received.length === 1, 3_000, "dispatch");
      const closing = t.coordinator.close({ drainMs: 20_000 });
      const late = new ScriptedProvider({ baseUrl: t.url, models: [{ id: "tiny" }] });
      await expect(late.start()).rejects.toMatchObject({ code: Code.Unavailable });
      await late.stop().catch(() => undefined);
      // Let the drain end: the stalled request's provider goes away.
      await p.stop();
      await closing;
      await pending;
    } finally {
      await p.stop().catch(() => undefined);
    }
  });
});
