import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  postJson,
  startTestCoordinator,
  startTestPostgres,
  type TestCoordinator,
  type TestPostgres,
  waitFor,
} from "@darkbloom/coordinator/testing";
import { readSse } from "@darkbloom/testing";
import { afterAll, beforeAll, expect, it } from "vitest";
import { runCli } from "./program.js";
import { testIo } from "./test-io.js";

/** A response body as loosely typed JSON, for assertions. */
// biome-ignore lint/suspicious/noExplicitAny: assertions check the shape
const readJson = async (res: Response): Promise<any> => res.json();

let pg: TestPostgres;
let t: TestCoordinator;
let home: string;

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url, { heartbeatIntervalMs: 500 });
  home = await mkdtemp(join(tmpdir(), "darkbloom-serve-llama-"));
});
afterAll(async () => {
  await t?.close();
  await pg?.stop();
  await rm(home, { recursive: true, force: true });
});

it("serve with the real llama engine on the synthesized tiny model, end to end", async () => {
  const dataDir = join(home, "data");
  const synth = testIo();
  expect(
    await runCli(["models", "synth", "tiny", "--data-dir", dataDir], synth.io, { defaults: { home } }),
  ).toBe(0);
  const io = testIo();
  const serving = runCli(
    [
      "serve",
      "--data-dir",
      dataDir,
      "--coordinator",
      t.url,
      "--log-level",
      "silent",
      "--max-batch",
      "4",
      "--threads",
      "2",
      "--kv-bits",
      "8",
      "--max-context",
      "1024",
      "--allow-cpu",
      // This is the node-llama-cpp engine's end-to-end test ("auto" picks the native one when built).
      "--engine",
      "llama",
    ],
    io.io,
    { defaults: { home }, cwd: home },
  );
  await waitFor(
    () => t.coordinator.registry.size === 1 || io.stderr() !== "",
    60_000,
    "the daemon to register",
  );
  expect(io.stderr()).toBe("");
  const handle = [...t.coordinator.registry.all()][0];
  expect(handle?.engineBackend).toBe("llama");

  const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, {
    model: "tiny",
    messages: [{ role: "user", content: "Say hello" }],
    max_tokens: 8,
    temperature: 0,
    n: 2,
  });
  expect(res.status).toBe(200);
  const body = await readJson(res);
  expect(body.choices).toHaveLength(2);
  expect(body.usage.completion_tokens).toBeGreaterThan(0);
  expect(body.choices[0].message.content).toBe(body.choices[1].message.content); // greedy: same text

  const streamed = await postJson(t.url, "/v1/completions", t.apiKey, {
    model: "tiny",
    prompt: "Once",
    max_tokens: 6,
    stream: true,
  });
  expect(streamed.status).toBe(200);
  const { events } = await readSse(streamed);
  expect(events.at(-1)?.data).toBe("[DONE]");

  const tooLong = await postJson(t.url, "/v1/completions", t.apiKey, {
    model: "tiny",
    prompt: "word ".repeat(900),
    max_tokens: 500,
  });
  expect(tooLong.status).toBe(400);
  expect((await readJson(tooLong)).error.code).toBe("context_length_exceeded");

  await waitFor(() => (handle?.decodeTokensPerSecond ?? 0) > 0, 5_000, "measured rates in a heartbeat");
  io.signal("SIGTERM");
  expect(await serving).toBe(0);
}, 120_000);
