import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
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
import { AcceleratorKind } from "@darkbloom/protocol/provider/v1";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ScriptedEngine } from "../testing/scripted-engine.js";
import type { CliDeps } from "./context.js";
import { runCli } from "./program.js";
import { testIo } from "./test-io.js";

/** A response body as loosely typed JSON, for assertions. */
// biome-ignore lint/suspicious/noExplicitAny: assertions check the shape
const readJson = async (res: Response): Promise<any> => res.json();

let pg: TestPostgres;
let t: TestCoordinator;
let home: string;
let dataDir: string;

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url, { heartbeatIntervalMs: 500 });
  home = await mkdtemp(join(tmpdir(), "darkbloom-serve-"));
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

function deps(engine: ScriptedEngine): Partial<CliDeps> {
  return {
    defaults: { home },
    cwd: home,
    createEngine: async () => engine,
    daemon: { link: { backoff: { initialMs: 50, maxMs: 200 } } },
  };
}

const serveArgs = () => [
  ...["serve", "--data-dir", dataDir, "--coordinator", t.url, "--log-level", "silent"],
  "--allow-cpu", // the scripted engine computes on the CPU, as it says
];

describe("darkbloom serve", () => {
  it("registers the synthesized model, serves through the coordinator, and drains on SIGTERM", async () => {
    const engine = new ScriptedEngine({ tokenIntervalMs: 10, tokensPerGeneration: 20 });
    const io = testIo();
    const serving = runCli(
      [...serveArgs(), "--max-batch", "2", "--drain-timeout", "10"],
      io.io,
      deps(engine),
    );
    await waitFor(() => t.coordinator.registry.size === 1, 10_000, "the daemon to register");
    expect(io.stdout()).toBe(`serving tiny to ${t.url} (pid ${process.pid})\n`);
    const handle = [...t.coordinator.registry.all()][0];
    expect(handle?.maxBatch).toBe(2);
    expect(handle?.engineBackend).toBe("scripted");
    const model = handle?.models.get("tiny");
    expect(model?.architecture).toBe("qwen3");
    expect(model?.quantization).toBe("Q8_0");
    expect(model?.weightSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(Number(model?.sizeBytes)).toBe((await stat(join(dataDir, "models", "tiny.gguf"))).size);
    expect(engine.loads).toEqual(["tiny"]);

    // The identity lives in the data directory: a PID file, a machine id and a 0600 X25519 key.
    expect(await readFile(join(dataDir, "darkbloom.pid"), "utf8")).toBe(`${process.pid}\n`);
    const key = await stat(join(dataDir, "encryption-key.pem"));
    expect(key.mode & 0o777).toBe(0o600);
    expect(handle?.machineId).toBe((await readFile(join(dataDir, "machine-id"), "utf8")).trim());

    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, {
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 5,
    });
    expect(res.status).toBe(200);
    expect((await readJson(res)).choices[0].message.content).toBe("tok0 tok1 tok2 tok3 tok4 ");

    // SIGTERM with a request in flight: it finishes, then the daemon exits 0 and cleans up.
    const inFlight = postJson(t.url, "/v1/completions", t.apiKey, {
      model: "tiny",
      prompt: "x",
      max_tokens: 20,
    });
    await waitFor(() => engine.activeIds.length === 1, 5_000, "the request to run");
    io.signal("SIGTERM");
    expect(await serving).toBe(0);
    const finished = await inFlight;
    expect(finished.status).toBe(200);
    expect((await readJson(finished)).choices[0].text.split(" ").filter(Boolean)).toHaveLength(20);
    expect(io.stdout()).toContain("SIGTERM: draining (up to 10 s)\nstopped\n");
    expect(engine.closed).toBe(true);
    await expect(stat(join(dataDir, "darkbloom.pid"))).rejects.toThrow();
    await waitFor(() => t.coordinator.registry.size === 0, 5_000, "the provider to leave");
  });

  it("refuses to start while another live daemon holds the PID file, and replaces a stale one", async () => {
    const other = spawn(process.execPath, ["-e", "setTimeout(() => {}, 20000)"], { stdio: "ignore" });
    try {
      await writeFile(join(dataDir, "darkbloom.pid"), `${other.pid}\n`);
      const engine = new ScriptedEngine();
      const io = testIo();
      expect(await runCli(serveArgs(), io.io, deps(engine))).toBe(1);
      expect(io.stderr()).toBe(
        `darkbloom: another darkbloom daemon is running (pid ${other.pid}, PID file ${join(dataDir, "darkbloom.pid")}); stop it first (darkbloom stop)\n`,
      );
      expect(engine.closed).toBe(true);
    } finally {
      other.kill();
      await new Promise((resolve) => other.once("exit", resolve));
    }
    // Now the file is stale: serve replaces it.
    const engine = new ScriptedEngine();
    const io = testIo();
    const serving = runCli(serveArgs(), io.io, deps(engine));
    await waitFor(() => t.coordinator.registry.size === 1, 10_000, "the daemon to register");
    expect(await readFile(join(dataDir, "darkbloom.pid"), "utf8")).toBe(`${process.pid}\n`);
    io.signal("SIGINT");
    expect(await serving).toBe(0);
  });

  it("refuses to join on the CPU without --allow-cpu (exit 64, before any model loads), and registers the engine's GPU", async () => {
    const args = serveArgs().filter((a) => a !== "--allow-cpu");
    const cpu = new ScriptedEngine();
    const refused = testIo();
    expect(await runCli(args, refused.io, deps(cpu))).toBe(64);
    expect(refused.stderr()).toBe(
      "darkbloom: the engine would compute on the CPU (it found no GPU it can use; `darkbloom doctor` says why): " +
        "pass --allow-cpu (DARKBLOOM_ALLOW_CPU=1) to serve anyway\n",
    );
    expect(cpu.loads).toEqual([]);
    expect(cpu.closed).toBe(true);
    await expect(stat(join(dataDir, "darkbloom.pid"))).rejects.toThrow();

    const gpus = [{ name: "NVIDIA H100 80GB HBM3", memoryBytes: 80 * 2 ** 30 }];
    const cuda = new ScriptedEngine({ device: { accelerator: "cuda", gpus } });
    const io = testIo();
    const serving = runCli(args, io.io, deps(cuda));
    await waitFor(() => t.coordinator.registry.size === 1, 10_000, "the daemon to register");
    const hardware = [...t.coordinator.registry.all()][0]?.hardware;
    expect(hardware?.accelerator).toBe(AcceleratorKind.CUDA);
    expect(hardware?.gpus.map((g) => [g.name, g.memoryBytes])).toEqual([
      ["NVIDIA H100 80GB HBM3", 80n * 2n ** 30n],
    ]);
    io.signal("SIGTERM");
    expect(await serving).toBe(0);
    await waitFor(() => t.coordinator.registry.size === 0, 5_000, "the provider to leave");
  });

  it("exits 64 when a configured model is missing", async () => {
    const io = testIo();
    expect(await runCli([...serveArgs(), "--model", "nope"], io.io, deps(new ScriptedEngine()))).toBe(64);
    expect(io.stderr()).toBe(
      `darkbloom: model nope is not in ${join(dataDir, "models")} (available: tiny)\n`,
    );
    await expect(stat(join(dataDir, "darkbloom.pid"))).rejects.toThrow();
  });
});
