import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import {
  startTestCoordinator,
  startTestPostgres,
  type TestCoordinator,
  type TestPostgres,
  waitFor,
} from "@darkbloom/coordinator/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleartextToAnotherMachine, isLoopbackHost } from "../config/coordinator-transport.js";
import { ScriptedEngine } from "../testing/scripted-engine.js";
import type { CliDeps } from "./context.js";
import { runCli } from "./program.js";
import { testIo } from "./test-io.js";

// Issue 10, item 10: the daemon sent its account token in the clear to a plain http:// coordinator
// on another machine. It now refuses at the preflight (exit 64, one line) unless --insecure.

/** An address of this machine that is not loopback, to stand for "another machine". */
function nonLoopbackAddress(): string | undefined {
  const all = Object.values(networkInterfaces()).flatMap((list) => list ?? []);
  const v4 = all.find((a) => a.family === "IPv4" && !a.internal);
  if (v4) return v4.address;
  const v6 = all.find((a) => a.family === "IPv6" && !a.internal && !a.address.startsWith("fe80"));
  return v6 ? `[${v6.address}]` : undefined;
}

const remote = nonLoopbackAddress();
let pg: TestPostgres;
let t: TestCoordinator;
let home: string;
let dataDir: string;
/** A TCP listener on every address that counts the connections it is offered. */
let counter: Server;
let counted: Socket[] = [];

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url, { heartbeatIntervalMs: 500, host: "0.0.0.0" });
  home = await mkdtemp(join(tmpdir(), "darkbloom-insecure-"));
  dataDir = join(home, "data");
  expect(
    await runCli(["models", "synth", "tiny", "--data-dir", dataDir], testIo().io, { defaults: { home } }),
  ).toBe(0);
  counter = createServer((socket) => {
    counted.push(socket);
    socket.destroy();
  });
  await new Promise<void>((resolve) => counter.listen(0, "0.0.0.0", resolve));
});
afterAll(async () => {
  await new Promise((resolve) => counter?.close(resolve));
  await t?.close();
  await pg?.stop();
  await rm(home, { recursive: true, force: true });
});

function deps(engines: ScriptedEngine[], fetched: string[] = []): Partial<CliDeps> {
  return {
    defaults: { home },
    cwd: home,
    createEngine: async () => {
      const engine = new ScriptedEngine();
      engines.push(engine);
      return engine;
    },
    fetch: async (input, init) => {
      fetched.push(String(input));
      return fetch(input, init);
    },
    daemon: { link: { backoff: { initialMs: 50, maxMs: 200 } } },
  };
}

const portOf = (url: string) => new URL(url).port;

describe("a plain http:// coordinator on another machine", () => {
  it("serve exits 64 with one line at the preflight: no engine, no PID file, no connection", async () => {
    counted = [];
    const engines: ScriptedEngine[] = [];
    const urls = ["http://example.com:8080"];
    // The refusal opens no connection, so naming this machine's own address costs no traffic.
    if (remote) urls.push(`http://${remote}:${(counter.address() as { port: number }).port}`);
    for (const url of urls) {
      const io = testIo();
      const args = ["serve", "--data-dir", dataDir, "--coordinator", url, "--log-level", "silent"];
      expect(await runCli(args, io.io, deps(engines))).toBe(64);
      expect(io.stderr()).toBe(
        `darkbloom: --coordinator ${url} is plain HTTP to another machine: the account token would travel ` +
          "unencrypted; use https://, or pass --insecure (DARKBLOOM_INSECURE=1) to accept that\n",
      );
    }
    // The same from the environment and the YAML file, named as given there.
    const env = testIo({ DARKBLOOM_COORDINATOR_URL: "http://example.com:8080" });
    expect(await runCli(["serve", "--data-dir", dataDir], env.io, deps(engines))).toBe(64);
    expect(env.stderr()).toMatch(
      /^darkbloom: DARKBLOOM_COORDINATOR_URL http:\/\/example\.com:8080 is plain HTTP/,
    );
    const yaml = join(home, "provider.yaml");
    await writeFile(yaml, "coordinator_url: http://example.com:8080\n");
    const file = testIo();
    expect(await runCli(["serve", "--data-dir", dataDir, "--config", yaml], file.io, deps(engines))).toBe(64);
    expect(file.stderr()).toMatch(/^darkbloom: coordinator_url http:\/\/example\.com:8080 is plain HTTP/);

    expect(engines).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 100));
    expect(counted).toHaveLength(0);
  });

  it("with --insecure (or DARKBLOOM_INSECURE=1) serve passes the preflight and goes on to load its engine", async () => {
    for (const [args, env] of [
      [["--insecure"], {}],
      [[], { DARKBLOOM_INSECURE: "1" }],
    ] as const) {
      const io = testIo(env);
      let created = 0;
      const cli = [
        "serve",
        "--data-dir",
        dataDir,
        "--coordinator",
        "http://example.com:8080",
        "--log-level",
        "silent",
        ...args,
      ];
      // The engine refuses to start, so nothing is dialled: what matters is that the preflight let it through.
      const code = await runCli(cli, io.io, {
        ...deps([]),
        createEngine: async () => {
          created++;
          throw new Error("engine unavailable in this test");
        },
      });
      expect(code).not.toBe(64);
      expect(created).toBe(1);
    }
  });

  // Dials this machine's own non-loopback address: opt-in (DARKBLOOM_TEST_NONLOOPBACK=1), since only
  // loopback traffic is allowed in some sandboxes, CI's included.
  it.skipIf(!remote || process.env.DARKBLOOM_TEST_NONLOOPBACK !== "1")(
    "with --insecure (or DARKBLOOM_INSECURE=1) serve proceeds: it dials and registers",
    async () => {
      const url = `http://${remote}:${portOf(t.url)}`;
      for (const [args, env] of [
        [["--insecure"], {}],
        [[], { DARKBLOOM_INSECURE: "1" }],
      ] as const) {
        const io = testIo(env);
        const serving = runCli(
          ["serve", "--data-dir", dataDir, "--coordinator", url, "--log-level", "silent", ...args],
          io.io,
          deps([]),
        );
        await waitFor(() => t.coordinator.registry.size === 1, 10_000, "the daemon to register");
        expect(io.stdout()).toContain(`serving tiny to ${url}`);
        io.signal("SIGTERM");
        expect(await serving).toBe(0);
        await waitFor(() => t.coordinator.registry.size === 0, 5_000, "the provider to leave");
      }
    },
  );

  it("login and logout exit 64 before sending anything; start before installing a service", async () => {
    const fetched: string[] = [];
    for (const command of ["login", "logout"]) {
      const io = testIo();
      const args = [command, "--data-dir", dataDir, "--coordinator", "http://example.com"];
      expect(await runCli(args, io.io, deps([], fetched))).toBe(64);
      expect(io.stderr()).toMatch(/^darkbloom: --coordinator http:\/\/example\.com is plain HTTP/);
    }
    expect(fetched).toEqual([]);
    let installed = false;
    const io = testIo();
    const start = ["start", "--data-dir", dataDir, "--coordinator", "http://example.com"];
    const code = await runCli(start, io.io, {
      ...deps([]),
      serviceManager: () => {
        installed = true;
        throw new Error("not to be reached");
      },
    });
    expect(code).toBe(64);
    expect(installed).toBe(false);
  });
});

describe("update from a plain http:// coordinator on another machine", () => {
  /** Records what update would fetch, and fetches nothing. */
  const recording = (fetched: string[]): Partial<CliDeps> => ({
    ...deps([]),
    platform: "linux",
    arch: "x64",
    fetch: async (input) => {
      fetched.push(String(input));
      throw new Error("not dialled in this test");
    },
  });

  it("update and update --check exit 64 with one line before asking anything", async () => {
    const fetched: string[] = [];
    const releases = join(home, "update-refused");
    for (const extra of [[], ["--check"], ["--force", "--install-dir", releases]]) {
      const io = testIo();
      const args = ["update", "--data-dir", dataDir, "--coordinator", "http://example.com:8080", ...extra];
      expect(await runCli(args, io.io, recording(fetched)), extra.join(" ")).toBe(64);
      expect(io.stderr()).toBe(
        "darkbloom: --coordinator http://example.com:8080 is plain HTTP to another machine: the release it " +
          "names (version, bundle URL and hashes) could be replaced on the way; use https://, or pass " +
          "--insecure (DARKBLOOM_INSECURE=1) to accept that\n",
      );
      expect(io.stdout()).toBe("");
    }
    // Named as given, from the environment too.
    const env = testIo({ DARKBLOOM_COORDINATOR_URL: "http://10.0.0.5:8080" });
    expect(await runCli(["update", "--data-dir", dataDir], env.io, recording(fetched))).toBe(64);
    expect(env.stderr()).toMatch(
      /^darkbloom: DARKBLOOM_COORDINATOR_URL http:\/\/10\.0\.0\.5:8080 is plain HTTP/,
    );
    expect(fetched).toEqual([]);
  });

  it("with --insecure (or DARKBLOOM_INSECURE=1) update goes on to ask for the release", async () => {
    for (const [args, env] of [
      [["--insecure"], {}],
      [["--check"], { DARKBLOOM_INSECURE: "1" }],
    ] as const) {
      const fetched: string[] = [];
      const io = testIo(env);
      const cli = ["update", "--data-dir", dataDir, "--coordinator", "http://example.com:8080", ...args];
      expect(await runCli(cli, io.io, recording(fetched))).toBe(1);
      expect(io.stderr()).toBe(
        "darkbloom: cannot reach the coordinator at http://example.com:8080: not dialled in this test\n",
      );
      expect(fetched).toEqual(["http://example.com:8080/v1/releases/latest?platform=linux-x64"]);
    }
  });
});

describe("which coordinators need no --insecure", () => {
  it("https:// anywhere, and http:// on this machine (localhost, 127.0.0.0/8, ::1)", () => {
    for (const url of [
      "https://coordinator.example.com",
      "https://203.0.113.9:8443",
      "http://localhost:8080",
      "http://127.0.0.1:8080",
      "http://127.1:8080",
      "http://127.255.0.3",
      "http://[::1]:8080",
      "http://[::ffff:127.0.0.1]:8080",
    ]) {
      expect(cleartextToAnotherMachine(url), url).toBe(false);
    }
    for (const url of [
      "http://example.com:8080",
      "http://10.0.0.5:8080",
      "http://0.0.0.0:8080",
      "http://localhost.example.com",
      "http://evil.localhost",
      "http://[2001:db8::1]",
      "http://[::ffff:10.0.0.1]",
    ]) {
      expect(cleartextToAnotherMachine(url), url).toBe(true);
    }
    expect(isLoopbackHost("LOCALHOST")).toBe(true);
  });
});
