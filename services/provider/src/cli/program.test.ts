import { appendFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ServiceManager, ServiceSpec, ServiceStatus } from "../service/index.js";
import { ScriptedEngine } from "../testing/scripted-engine.js";
import type { CliDeps } from "./context.js";
import { runCli } from "./program.js";
import { formatBytes } from "./progress.js";
import { testIo } from "./test-io.js";

const GIB = 1024 ** 3;

let home: string;
let dataDir: string;
beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), "darkbloom-cli-"));
  dataDir = join(home, "data");
});
afterEach(async () => {
  await rm(home, { recursive: true, force: true });
});

class FakeService implements ServiceManager {
  readonly kind = "launchd";
  readonly name = "io.darkbloom.provider";
  readonly definitionPath = "/fake/io.darkbloom.provider.plist";
  started: ServiceSpec[] = [];
  stops = 0;
  current: ServiceStatus = {
    installed: true,
    loaded: true,
    running: true,
    pid: 42,
    detail: "gui/501/io.darkbloom.provider is running, pid 42",
  };
  render(): string {
    return "";
  }
  async start(spec: ServiceSpec): Promise<void> {
    this.started.push(spec);
  }
  async stop(): Promise<void> {
    this.stops++;
  }
  restarts = 0;
  async restart(): Promise<void> {
    this.restarts++;
  }
  async status(): Promise<ServiceStatus> {
    return this.current;
  }
}

function deps(extra: Partial<CliDeps> = {}): Partial<CliDeps> {
  return {
    // doctor: a 4-core machine of its own, nothing else running (the test machine's never counts).
    cpuTopology: async () => ({ logicalCpus: 8, physicalCores: 4, source: "test" }),
    processes: async () => [],
    defaults: { home, totalMemoryBytes: 16 * GIB, cpuCount: 4 },
    cwd: home,
    createEngine: async () => {
      throw new Error("no engine in this test");
    },
    serviceManager: () => {
      throw new Error("no service manager in this test");
    },
    nodePath: "/usr/bin/node",
    scriptPath: "/opt/darkbloom/bin/darkbloom.js",
    platform: "linux",
    arch: "x64",
    ...extra,
  };
}

async function run(argv: string[], env: Record<string, string> = {}, extra: Partial<CliDeps> = {}) {
  const t = testIo(env);
  const code = await runCli(argv, t.io, deps(extra));
  return { code, stdout: t.stdout(), stderr: t.stderr() };
}

describe("usage errors", () => {
  it("a bare or unknown command is one line and exit 64", async () => {
    const bare = await run([]);
    expect(bare.code).toBe(64);
    expect(bare.stderr).toBe(
      "darkbloom: missing command (expected one of: serve, start, stop, status, doctor, logs, login, logout, models, update, benchmark, autotune, verify)\n",
    );
    const unknown = await run(["fly"]);
    expect(unknown.code).toBe(64);
    expect(unknown.stderr).toMatch(/^darkbloom: unknown command 'fly'/);
    const models = await run(["models"]);
    expect(models).toMatchObject({
      code: 64,
      stderr: "darkbloom: models: missing command (expected one of: list, remove, synth, download)\n",
    });
    const option = await run(["serve", "--bogus"]);
    expect(option.code).toBe(64);
    expect(option.stderr).toBe("darkbloom: unknown option '--bogus'\n");
  });

  it("serve's preflight rejects invalid values before anything starts", async () => {
    let engines = 0;
    const counting = {
      createEngine: async () => {
        engines++;
        return new ScriptedEngine();
      },
    };
    const cases: [string[], Record<string, string>, string][] = [
      [["--kv-bits", "7"], {}, "darkbloom: --kv-bits must be 4 or 8 (got 7 from the command line)\n"],
      [
        ["--max-batch", "0"],
        {},
        "darkbloom: --max-batch must be a whole number from 1 to 4096 (got 0 from the command line)\n",
      ],
      [
        [],
        { DARKBLOOM_MAX_CONTEXT: "0" },
        "darkbloom: DARKBLOOM_MAX_CONTEXT must be a whole number from 1 to 10000000 (got 0 from the environment)\n",
      ],
      [
        ["--idle-timeout", "soon"],
        {},
        "darkbloom: --idle-timeout must be a whole number from 0 to 525600 (got soon from the command line)\n",
      ],
      [
        ["--threads", "many"],
        {},
        "darkbloom: --threads must be auto or a whole number from 1 to 1024 (got many from the command line)\n",
      ],
      [
        [],
        { DARKBLOOM_THREADS: "0" },
        "darkbloom: DARKBLOOM_THREADS must be auto or a whole number from 1 to 1024 (got 0 from the environment)\n",
      ],
      [
        ["--drain-timeout", "-5"],
        {},
        "darkbloom: --drain-timeout must be a whole number of seconds from 0 to 3600 (got -5)\n",
      ],
    ];
    for (const [args, env, message] of cases) {
      const r = await run(["serve", "--data-dir", dataDir, ...args], env, counting);
      expect(r).toEqual({ code: 64, stdout: "", stderr: message });
    }
    await mkdir(join(home, ".config", "darkbloom"), { recursive: true });
    await writeFile(join(home, ".config", "darkbloom", "provider.yaml"), "max_batch: 2\nturbo: true\n");
    const yaml = await run(["serve"], {}, counting);
    expect(yaml.code).toBe(64);
    expect(yaml.stderr).toMatch(/^darkbloom: unknown setting "turbo" in .*provider\.yaml \(known: /);
    expect(engines).toBe(0);
    await expect(stat(dataDir)).rejects.toThrow(); // nothing was created
  });

  it("serve with no models exits 64 naming the models directory", async () => {
    const r = await run(
      ["serve", "--data-dir", dataDir],
      {},
      { createEngine: async () => new ScriptedEngine() },
    );
    expect(r.code).toBe(64);
    expect(r.stderr).toBe(
      `darkbloom: no models in ${join(dataDir, "models")}; run \`darkbloom models synth tiny\` or \`darkbloom models download <url>\`\n`,
    );
  });
});

describe("start / stop / status", () => {
  it("start installs the service with the explicit settings after the preflight", async () => {
    const service = new FakeService();
    const yaml = join(home, "provider.yaml");
    await writeFile(yaml, "threads: 3\n");
    const r = await run(
      [
        "start",
        "--data-dir",
        dataDir,
        "--config",
        yaml,
        "--max-batch",
        "8",
        "--model",
        "tiny",
        "--model",
        "big",
      ],
      { DARKBLOOM_KV_BITS: "4" },
      { serviceManager: () => service },
    );
    expect(r.code).toBe(0);
    expect(service.started).toEqual([
      {
        nodePath: "/usr/bin/node",
        scriptPath: "/opt/darkbloom/bin/darkbloom.js",
        serveArgs: [
          "--data-dir",
          dataDir,
          "--config",
          yaml,
          "--model",
          "tiny",
          "--model",
          "big",
          "--kv-bits",
          "4",
          "--max-batch",
          "8",
        ],
        dataDir,
        logFile: join(dataDir, "logs", "provider.log"),
      },
    ]);
    expect(r.stdout).toBe(
      `started io.darkbloom.provider (launchd, /fake/io.darkbloom.provider.plist)\nlogs: ${join(dataDir, "logs", "provider.log")} (darkbloom logs --follow)\n`,
    );
    const bad = await run(["start", "--kv-bits", "5"], {}, { serviceManager: () => service });
    expect(bad).toMatchObject({
      code: 64,
      stderr: "darkbloom: --kv-bits must be 4 or 8 (got 5 from the command line)\n",
    });
    expect(service.started).toHaveLength(1);
    // Once `darkbloom update` installed a release, the service runs it through the `current` link.
    const entry = join(dataDir, "releases", "current", "dist", "bin", "darkbloom.js");
    await mkdir(dirname(entry), { recursive: true });
    await writeFile(entry, "");
    expect((await run(["start", "--data-dir", dataDir], {}, { serviceManager: () => service })).code).toBe(0);
    expect(service.started[1]?.scriptPath).toBe(entry);
  });

  it("stop and status go through the service manager; status exits 3 when not running", async () => {
    const service = new FakeService();
    expect(await run(["stop"], {}, { serviceManager: () => service })).toEqual({
      code: 0,
      stdout: "stopped io.darkbloom.provider\n",
      stderr: "",
    });
    expect(service.stops).toBe(1);
    const running = await run(["status", "--data-dir", dataDir], {}, { serviceManager: () => service });
    expect(running.code).toBe(0);
    expect(running.stdout).toBe(
      `service: gui/501/io.darkbloom.provider is running, pid 42\ndaemon: not running (no PID file in ${dataDir})\n`,
    );
    service.current = {
      installed: false,
      loaded: false,
      running: false,
      pid: undefined,
      detail: "not loaded",
    };
    const stopped = await run(["status", "--data-dir", dataDir], {}, { serviceManager: () => service });
    expect(stopped.code).toBe(3);
    expect(stopped.stderr).toBe("");
    await mkdir(dataDir, { recursive: true });
    await writeFile(join(dataDir, "darkbloom.pid"), `${process.pid}\n`);
    const foreground = await run(["status", "--data-dir", dataDir], {}, { serviceManager: () => service });
    expect(foreground.code).toBe(0);
    expect(foreground.stdout).toContain(`daemon: running, pid ${process.pid}`);
  });
});

describe("models", () => {
  it("synth, list, remove", async () => {
    const synth = await run(["models", "synth", "tiny", "--data-dir", dataDir, "--seed", "1"]);
    expect(synth.code).toBe(0);
    expect(synth.stdout).toMatch(/^wrote tiny \(qwen3, Q8_0, .* sha256 [0-9a-f]{64}\) to .*tiny\.gguf\n$/);
    const again = await run(["models", "synth", "tiny", "--data-dir", dataDir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/tiny\.gguf exists; use --force to overwrite it\n$/);

    const list = await run(["models", "list", "--data-dir", dataDir]);
    expect(list.code).toBe(0);
    const [header, row] = list.stdout.trim().split("\n");
    expect(header).toMatch(/^ID\s+FORMAT\s+SIZE\s+QUANT\s+ARCH\s+CONTEXT\s+SHA256$/);
    expect(row).toMatch(/^tiny\s+gguf\s+\S+ KiB\s+Q8_0\s+qwen3\s+2048\s+[0-9a-f]{16}$/);
    const json = JSON.parse((await run(["models", "list", "--json", "--data-dir", dataDir])).stdout);
    expect(json.models[0]).toMatchObject({
      id: "tiny",
      quantization: "Q8_0",
      architecture: "qwen3",
      contextLength: 2048,
    });
    expect(json.models[0].sha256).toBe(synth.stdout.match(/sha256 ([0-9a-f]{64})/)?.[1]);

    // A broken file is reported, not fatal.
    await writeFile(join(dataDir, "models", "broken.gguf"), "nope");
    const withBroken = await run(["models", "list", "--data-dir", dataDir]);
    expect(withBroken.code).toBe(0);
    expect(withBroken.stderr).toMatch(/^darkbloom: broken\.gguf is not a usable model: /);

    expect(await run(["models", "remove", "tiny", "--data-dir", dataDir])).toMatchObject({
      code: 0,
      stdout: "removed tiny\n",
    });
    const missing = await run(["models", "remove", "tiny", "--data-dir", dataDir]);
    expect(missing).toMatchObject({
      code: 1,
      stderr: `darkbloom: no model tiny in ${join(dataDir, "models")}\n`,
    });
    expect((await run(["models", "synth", "huge", "--data-dir", dataDir])).code).toBe(64);
    expect((await run(["models", "synth", "tiny", "--quant", "Q3", "--data-dir", dataDir])).code).toBe(64);
  });

  describe("download", () => {
    let server: Server;
    let base: string;
    let file: Buffer;
    beforeEach(async () => {
      const synth = join(home, "synth");
      await run(["models", "synth", "tiny", "--data-dir", synth]);
      file = await readFile(join(synth, "models", "tiny.gguf"));
      server = createServer((req, res) => {
        const body = req.url === "/junk.gguf" ? Buffer.from("not a model") : file;
        res.writeHead(200, { "content-length": body.length });
        res.end(body);
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterEach(async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    });

    it("downloads into the models directory and checks the hash", async () => {
      const { createHash } = await import("node:crypto");
      const sha = createHash("sha256").update(file).digest("hex");
      const ok = await run([
        "models",
        "download",
        `${base}/tiny.gguf`,
        "--sha256",
        sha,
        "--name",
        "fetched",
        "--data-dir",
        dataDir,
      ]);
      expect(ok.code).toBe(0);
      expect(ok.stdout).toMatch(new RegExp(`^downloaded fetched \\(.* sha256 ${sha}\\)\\n$`));
      expect((await readFile(join(dataDir, "models", "fetched.gguf"))).equals(file)).toBe(true);

      const wrong = await run([
        "models",
        "download",
        `${base}/tiny.gguf`,
        "--sha256",
        "f".repeat(64),
        "--data-dir",
        dataDir,
      ]);
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toBe(
        `darkbloom: SHA-256 mismatch: expected ${"f".repeat(64)}, got ${sha}; the download was deleted\n`,
      );
      await expect(stat(join(dataDir, "models", "tiny.gguf"))).rejects.toThrow();

      const junk = await run(["models", "download", `${base}/junk.gguf`, "--data-dir", dataDir]);
      expect(junk.code).toBe(1);
      expect(junk.stderr).toMatch(/^darkbloom: the downloaded file is not usable: .*; it was deleted\n$/);

      expect((await run(["models", "download", "ftp://x/y.gguf", "--data-dir", dataDir])).code).toBe(64);
      expect(
        (await run(["models", "download", `${base}/tiny.gguf`, "--sha256", "xyz", "--data-dir", dataDir]))
          .code,
      ).toBe(64);
    });

    it("downloads every file of a hub repository into a directory of its own, once", async () => {
      const { createHash } = await import("node:crypto");
      const commit = "ab".repeat(20);
      const files = { "config.json": Buffer.from("{}\n"), "weights.safetensors": file };
      const blob = (b: Buffer) => createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");
      const hub = createServer((req, res) => {
        const path = new URL(req.url ?? "/", "http://x").pathname;
        if (path === "/api/models/acme/tiny-mlx/revision/main") {
          res.writeHead(200, { "content-type": "application/json" });
          res.end(
            JSON.stringify({
              sha: commit,
              siblings: Object.entries(files).map(([name, body]) => ({
                rfilename: name,
                size: body.length,
                blobId: blob(body),
              })),
            }),
          );
          return;
        }
        const name = path.replace(`/acme/tiny-mlx/resolve/${commit}/`, "") as keyof typeof files;
        const body = files[name];
        res.writeHead(body ? 200 : 404, body ? { "content-length": body.length } : {});
        res.end(body);
      });
      await new Promise<void>((resolve) => hub.listen(0, "127.0.0.1", resolve));
      const env = { HF_ENDPOINT: `http://127.0.0.1:${(hub.address() as AddressInfo).port}` };
      try {
        const ok = await run(["models", "download", "acme/tiny-mlx", "--data-dir", dataDir], env);
        expect(ok.code).toBe(0);
        const dir = join(dataDir, "models", "tiny-mlx");
        expect(ok.stdout).toBe(
          `downloaded acme/tiny-mlx at ${commit.slice(0, 12)} into ${dir} (2 files, ${formatBytes(file.length + 3)})\n`,
        );
        expect((await readFile(join(dir, "weights.safetensors"))).equals(file)).toBe(true);
        const again = await run(["models", "download", "acme/tiny-mlx", "--data-dir", dataDir], env);
        expect(again).toMatchObject({
          code: 1,
          stderr: `darkbloom: ${dir} holds tiny-mlx already; use --force to replace it\n`,
        });
        const forced = await run(
          ["models", "download", "acme/tiny-mlx", "--force", "--data-dir", dataDir],
          env,
        );
        expect(forced.code).toBe(0);
        const missing = await run(["models", "download", "acme/none", "--data-dir", dataDir], env);
        expect(missing.code).toBe(1);
        expect(missing.stderr).toMatch(
          /^darkbloom: acme\/none@main was not found on http:\/\/127\.0\.0\.1:\d+/,
        );
        expect(
          (await run(["models", "download", "acme/tiny-mlx", "--sha256", "a".repeat(64)], env)).code,
        ).toBe(64);
        expect((await run(["models", "download", `${base}/tiny.gguf`, "--revision", "v1"], env)).code).toBe(
          64,
        );
      } finally {
        hub.closeAllConnections();
        await new Promise((resolve) => hub.close(resolve));
      }
    });
  });
});

describe("logs", () => {
  it("prints the last lines, and follows appended ones until interrupted", async () => {
    const logFile = join(dataDir, "logs", "provider.log");
    await mkdir(join(dataDir, "logs"), { recursive: true });
    await writeFile(logFile, `${Array.from({ length: 100 }, (_, i) => `line ${i}`).join("\n")}\n`);
    const last = await run(["logs", "-n", "3", "--data-dir", dataDir]);
    expect(last).toEqual({ code: 0, stdout: "line 97\nline 98\nline 99\n", stderr: "" });

    const t = testIo();
    const following = runCli(["logs", "-n", "1", "--follow", "--data-dir", dataDir], t.io, deps());
    await new Promise((r) => setTimeout(r, 100));
    await appendFile(logFile, "line 100\nline 101\n");
    const until = Date.now() + 5_000;
    while (!t.stdout().includes("line 101") && Date.now() < until)
      await new Promise((r) => setTimeout(r, 50));
    t.signal("SIGINT");
    expect(await following).toBe(0);
    expect(t.stdout()).toBe("line 99\nline 100\nline 101\n");

    const none = await run(["logs", "--data-dir", join(home, "elsewhere")]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^darkbloom: no log file at /);
  });
});

describe("doctor", () => {
  let server: Server;
  let base: string;
  let dateHeader: () => string;
  beforeEach(async () => {
    dateHeader = () => new Date().toUTCString();
    server = createServer((req, res) => {
      res.writeHead(req.url === "/healthz" ? 200 : 404, {
        date: dateHeader(),
        "content-type": "application/json",
      });
      res.end('{"status":"ok"}');
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await run(["models", "synth", "tiny", "--data-dir", dataDir]);
  });
  afterEach(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const engine = { createEngine: async () => new ScriptedEngine() };

  it("passes every check on a healthy setup", async () => {
    const r = await run(
      ["doctor", "--data-dir", dataDir, "--coordinator", base, "--tpm", "off", "--allow-cpu"],
      {},
      engine,
    );
    const lines = r.stdout.trim().split("\n");
    expect(lines.map((l) => l.split(/\s+/).slice(0, 2).join(" "))).toEqual([
      "PASS platform",
      "PASS accelerator",
      "PASS engine",
      "PASS models",
      "PASS memory",
      "PASS threads",
      "PASS tpm",
      "PASS coordinator",
      "PASS clock",
    ]);
    expect(r.stdout).toMatch(/^PASS\s+engine\s+scripted loads tiny in \d+ ms$/m);
    // tiny is 1 MiB: auto takes one thread of the 4 cores.
    expect(r.stdout).toMatch(
      /^PASS\s+threads\s+auto: 1 thread; no other daemon on 4 physical cores \(test\)$/m,
    );
    expect(r.code).toBe(0);
  });

  it("warns (without failing) when daemons' threads oversubscribe the physical cores", async () => {
    const others = {
      ...engine,
      processes: async () => [
        { pid: 4101, args: "node /opt/darkbloom/bin/darkbloom.js serve --threads 2 --model big" },
        { pid: 4102, args: "/usr/local/bin/darkbloom serve --threads=2" },
        { pid: 4103, args: "vim darkbloom serve-notes.txt" },
      ],
    };
    const r = await run(
      ["doctor", "--data-dir", dataDir, "--coordinator", base, "--threads", "2"],
      {},
      others,
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /^WARN\s+threads\s+3 darkbloom daemons on this machine \(this one and pid 4101, 4102\) would run 6 engine threads on 4 physical cores \(test\): oversubscribed \(fix: give each daemon --threads 1 \(4 cores \/ 3 daemons\), or run fewer daemons\)$/m,
    );
    const alone = await run(
      ["doctor", "--data-dir", dataDir, "--coordinator", base, "--threads", "6"],
      {},
      engine,
    );
    expect(alone.code).toBe(0);
    expect(alone.stdout).toMatch(
      /^WARN\s+threads\s+--threads 6 exceeds the 4 physical cores \(test\): .* \(fix: --threads 4 or --threads auto/m,
    );
  });

  it("fails with fix hints when the coordinator is away, the clock is off or models are missing", async () => {
    dateHeader = () => new Date(Date.now() - 3_600_000).toUTCString();
    const skewed = await run(["doctor", "--data-dir", dataDir, "--coordinator", base], {}, engine);
    expect(skewed.code).toBe(1);
    expect(skewed.stdout).toMatch(
      /^FAIL\s+clock\s+3\d{3}\.\d s ahead of the coordinator \(fix: enable time synchronisation/m,
    );
    expect(skewed.stderr).toBe("darkbloom: 1 check failed\n");

    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const away = await run(
      [
        "doctor",
        "--data-dir",
        dataDir,
        "--coordinator",
        `http://127.0.0.1:${closedPort}`,
        "--model",
        "missing",
      ],
      {},
      {
        createEngine: async () => {
          throw new Error("no binary");
        },
      },
    );
    expect(away.code).toBe(1);
    expect(away.stdout).toMatch(
      /^FAIL\s+coordinator\s+http:\/\/127\.0\.0\.1:\d+\/healthz unreachable \(ECONNREFUSED\) \(fix: start the coordinator/m,
    );
    expect(away.stdout).toMatch(
      /^FAIL\s+models\s+configured but missing: missing \(fix: darkbloom models synth tiny/m,
    );
    expect(away.stdout).toMatch(/^FAIL\s+engine\s+cannot start: no binary \(fix: reinstall/m);
    expect(away.stderr).toBe("darkbloom: 4 checks failed\n");
  });

  it("reports the engine's device: the CPU warns without --allow-cpu, a GPU the engine does not use fails", async () => {
    const args = ["doctor", "--data-dir", dataDir, "--coordinator", base, "--tpm", "off"];
    const cpu = await run(args, {}, engine);
    expect(cpu.stdout).toMatch(
      /^WARN\s+accelerator\s+cpu \(no GPU on this machine\): serve refuses to join the network on the CPU \(fix: --allow-cpu/m,
    );
    expect(cpu.code).toBe(0);

    const mac = { platform: "darwin" as const, arch: "arm64" };
    const fallback = await run(args, {}, { ...engine, ...mac });
    expect(fallback.stdout).toMatch(
      /^FAIL\s+accelerator\s+this machine has metal but the engine computes on the CPU/m,
    );
    expect(fallback.code).toBe(1);

    const device = {
      accelerator: "metal" as const,
      gpus: [{ name: "Apple M3 Max", memoryBytes: 36 * 2 ** 30 }],
    };
    const metal = await run(args, {}, { ...mac, createEngine: async () => new ScriptedEngine({ device }) });
    expect(metal.stdout).toMatch(/^PASS\s+accelerator\s+metal: Apple M3 Max \(36\.0 GiB\)$/m);
  });
});
