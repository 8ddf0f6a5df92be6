import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
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
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parsePrometheusText, sampleValue } from "../testing/prometheus-text.js";
import { ScriptedEngine } from "../testing/scripted-engine.js";
import type { CliDeps } from "./context.js";
import { runCli } from "./program.js";
import { testIo } from "./test-io.js";

let pg: TestPostgres;
let t: TestCoordinator;
let home: string;
let dataDir: string;

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url, { heartbeatIntervalMs: 500 });
  home = await mkdtemp(join(tmpdir(), "darkbloom-serve-metrics-"));
  dataDir = join(home, "data");
  const synth = testIo();
  expect(
    await runCli(["models", "synth", "tiny", "--data-dir", dataDir], synth.io, { defaults: { home } }),
  ).toBe(0);
});
afterAll(async () => {
  await t?.close();
  await pg?.stop();
  await rm(home, { recursive: true, force: true });
});

/** The daemon's log lines as JSON: where the metrics listener says its URL. */
function deps(engine: ScriptedEngine, log: Record<string, unknown>[] = []): Partial<CliDeps> {
  return {
    defaults: { home },
    cwd: home,
    createEngine: async () => engine,
    logDestination: { write: (line: string) => void log.push(JSON.parse(line)) },
    daemon: { link: { backoff: { initialMs: 50, maxMs: 200 } } },
  };
}

const serveArgs = () => [
  ...["serve", "--data-dir", dataDir, "--coordinator", t.url, "--log-level", "info"],
  "--allow-cpu", // the scripted engine computes on the CPU, as it says
];

async function scrape(url: string) {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  return parsePrometheusText(await res.text());
}

/** Resolves once the async `predicate` holds, polling every 20 ms, or rejects after `timeoutMs`. */
async function until(predicate: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function takenPort(): Promise<{ port: number; release: () => Promise<void> }> {
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
  return {
    port: (blocker.address() as AddressInfo).port,
    release: () => new Promise((resolve) => blocker.close(() => resolve())),
  };
}

describe("darkbloom serve --metrics-listen", () => {
  it("serves the daemon's metrics, which move with a model load and a request served", async () => {
    const engine = new ScriptedEngine({ tokenIntervalMs: 1, tokensPerGeneration: 9 });
    const io = testIo();
    const log: Record<string, unknown>[] = [];
    const serving = runCli([...serveArgs(), "--metrics-listen", "127.0.0.1:0"], io.io, deps(engine, log));
    await waitFor(() => t.coordinator.registry.size === 1, 10_000, "the daemon to register");
    const url = log.find((l) => l.msg === "serving metrics")?.url as string;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    await until(
      async () => sampleValue(await scrape(url), "darkbloom_provider_coordinator_connected") === 1,
      10_000,
      "the link to show as connected",
    );
    let families = await scrape(url);
    expect(
      sampleValue(families, "darkbloom_provider_model_loads_total", { model: "tiny", result: "loaded" }),
    ).toBe(1);
    expect(sampleValue(families, "darkbloom_provider_model_loaded", { model: "tiny" })).toBe(1);
    expect(sampleValue(families, "darkbloom_provider_coordinator_registrations_total")).toBe(1);
    expect(sampleValue(families, "darkbloom_provider_batch_slots")).toBe(4);
    const version = families.get("darkbloom_provider_build_info")?.samples[0]?.labels.version;
    expect(version).toMatch(/^\d+\.\d+\.\d+/);
    const before = sampleValue(families, "darkbloom_provider_generated_tokens_total") ?? Number.NaN;

    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, {
      model: "tiny",
      messages: [{ role: "user", content: "secret prompt words" }],
      max_tokens: 5,
    });
    expect(res.status).toBe(200);
    const completion = ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]
      ?.message.content;
    await until(
      async () =>
        sampleValue(await scrape(url), "darkbloom_provider_requests_total", {
          model: "tiny",
          outcome: "completed",
        }) === 1,
      5_000,
      "the request to be counted",
    );
    const text = await (await fetch(`${url}/metrics`)).text();
    families = parsePrometheusText(text);
    expect(sampleValue(families, "darkbloom_provider_generated_tokens_total")).toBe(before + 5);
    expect(sampleValue(families, "darkbloom_provider_prompt_tokens_total")).toBeGreaterThan(0);
    expect(
      sampleValue(families, "darkbloom_provider_requests_total", { model: "tiny", outcome: "failed" }),
    ).toBe(0);
    expect(sampleValue(families, "darkbloom_provider_heartbeats_sent_total")).toBeGreaterThan(0);
    // Neither the prompt nor the completion is exported.
    expect(text).not.toContain("secret");
    expect(completion && text.includes(completion.trim())).toBe(false);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);

    io.signal("SIGTERM");
    expect(await serving).toBe(0);
    // The listener closed with the daemon.
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
    await waitFor(() => t.coordinator.registry.size === 0, 5_000, "the provider to leave");
  });

  it("an address chosen and taken stops the start (exit 1) before any model loads", async () => {
    const taken = await takenPort();
    try {
      const engine = new ScriptedEngine();
      const io = testIo();
      const code = await runCli(
        [...serveArgs(), "--metrics-listen", `127.0.0.1:${taken.port}`],
        io.io,
        deps(engine),
      );
      expect(code).toBe(1);
      expect(io.stderr()).toBe(
        `darkbloom: cannot serve metrics on 127.0.0.1:${taken.port}: the address is in use (another daemon on this machine?)\n`,
      );
      expect(engine.loads).toEqual([]);
      expect(engine.closed).toBe(true);
    } finally {
      await taken.release();
    }
  });

  it("the default address (loopback) is best-effort: taken, the daemon serves on and says why", async () => {
    const engine = new ScriptedEngine();
    const io = testIo();
    const log: Record<string, unknown>[] = [];
    // Hold the default port ourselves, unless something else already does: either way it is taken.
    const blocker = createServer();
    const held = await new Promise<boolean>((resolve) => {
      blocker.once("error", () => resolve(false));
      blocker.listen(9464, "127.0.0.1", () => resolve(true));
    });
    try {
      const serving = runCli(serveArgs(), io.io, deps(engine, log));
      await waitFor(() => t.coordinator.registry.size === 1, 10_000, "the daemon to register");
      expect(log.find((l) => l.msg === "serving metrics")).toBeUndefined();
      expect(log.filter((l) => (l.level as number) >= 40).map((l) => l.msg)).toContain(
        "cannot serve metrics on 127.0.0.1:9464: the address is in use (another daemon on this machine?); " +
          "serving without metrics (set --metrics-listen to another address, or off)",
      );
      io.signal("SIGINT");
      expect(await serving).toBe(0);
    } finally {
      if (held) await new Promise((resolve) => blocker.close(resolve));
    }
  });

  it("off serves no metrics; a bad value is a one-line usage error (exit 64)", async () => {
    const io = testIo();
    const log: Record<string, unknown>[] = [];
    const serving = runCli(
      [...serveArgs(), "--metrics-listen", "off"],
      io.io,
      deps(new ScriptedEngine(), log),
    );
    await waitFor(() => t.coordinator.registry.size === 1, 10_000, "the daemon to register");
    expect(log.filter((l) => String(l.msg).includes("metrics"))).toEqual([]);
    io.signal("SIGINT");
    expect(await serving).toBe(0);

    for (const [args, env, message] of [
      [
        ["--metrics-listen", "9464"],
        {},
        "--metrics-listen must be off or HOST:PORT (HOST an IP address or localhost, IPv6 in brackets; PORT 0 to 65535) (got 9464 from the command line)",
      ],
      [
        [],
        { DARKBLOOM_METRICS_LISTEN: "127.0.0.1:99999" },
        "DARKBLOOM_METRICS_LISTEN must have a port from 0 to 65535 (got 127.0.0.1:99999 from the environment)",
      ],
    ] as const) {
      const bad = testIo({ ...env });
      const engine = new ScriptedEngine();
      expect(await runCli([...serveArgs(), ...args], bad.io, deps(engine))).toBe(64);
      expect(bad.stderr()).toBe(`darkbloom: ${message}\n`);
      expect(engine.loads).toEqual([]);
    }
  });
});
