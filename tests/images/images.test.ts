// The container images without a Docker engine: images/Dockerfile is parsed strictly, its stages
// are built in a temporary folder (every RUN command really runs, with this machine's Node and npm
// and the npm cache standing for the base image's; every COPY copies from the context, honouring
// .dockerignore, or from an earlier stage), and then each target's root is checked: only the
// production dependency closure the lockfile gives, no sources or tests, and its ENTRYPOINT, run from
// that root with the image's ENV, does the work it is for: the coordinator migrates a real
// PostgreSQL and serves with the operator's arguments, the operator serves its probes against the
// fake API server, the provider reports its status and loads llama.cpp's CPU binary.
//
// What this does not prove (docs/KUBERNETES.md, "Images"): the base image (its Node, npm, libc) and
// Docker's own COPY and layer semantics; `docker build` never runs here.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { createTestDatabase, startTestPostgres, type TestPostgres } from "@darkbloom/coordinator/testing";
import { type OperatorTestEnv, startOperatorEnv } from "@darkbloom/operator/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { serveArgs } from "../../operator/src/controllers/coordinator/resources/deployment.js";
import {
  DATA_DIR,
  securityContext,
} from "../../operator/src/controllers/coordinator/resources/pod-common.js";
import { storedCoordinator } from "../../operator/src/testing/coordinator-fixture.js";
import { coordinatorEntrypoint } from "../kubernetes/support.js";
import { type BuildResult, buildStages, inRoot } from "./build.js";
import {
  type Dockerfile,
  DockerfileError,
  entrypointOnHost,
  parseDockerfile,
  REPO,
  readDockerfile,
} from "./dockerfile.js";
import {
  changedPaths,
  filesOutsideNodeModules,
  installedPackages,
  lockfileClosure,
  packageName,
  readLockfile,
  snapshot,
} from "./layout.js";

/** Each target, the workspace it deploys and its command's name. */
const TARGETS = [
  { target: "coordinator", workspace: "services/coordinator", bin: "darkbloom-coordinator" },
  { target: "operator", workspace: "operator", bin: "darkbloom-operator" },
  { target: "provider", workspace: "services/provider", bin: "darkbloom" },
] as const;
type Target = (typeof TARGETS)[number]["target"];

/** Packages no image may hold: the toolchain and the test runner. */
const DEV_ONLY = [
  "typescript",
  "vitest",
  "@biomejs/biome",
  "@bufbuild/buf",
  "@bufbuild/protoc-gen-es",
  "@darkbloom/testing",
];

let dockerfile: Dockerfile;
let work: string;
let built: BuildResult;
let buildSeconds: number;
/** A PATH holding only `node`: what the slim base image offers these commands (no systemctl). */
let nodeOnlyPath: string;

const root = (target: Target) => built.roots.get(target) as string;

/** The target's ENV with its absolute paths moved into the target's root. */
function imageEnv(target: Target, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = dockerfile.stage(target).config.env;
  const mapped = Object.entries(env).map(([k, v]) => [k, v.startsWith("/") ? inRoot(root(target), v) : v]);
  return { PATH: nodeOnlyPath, ...Object.fromEntries(mapped), ...extra };
}

/** An argv of the image (ENTRYPOINT, HEALTHCHECK) as a command here, run from the target's root. */
function hostArgv(target: Target, argv: readonly string[]): string[] {
  return argv.map((word, i) => {
    if (i === 0 && word === "node") return process.execPath;
    return word.startsWith("/") && !word.startsWith("//") ? inRoot(root(target), word) : word;
  });
}

/** Runs the image's `argv` (its paths in the target's root) followed by `args` as given. */
function launch(
  target: Target,
  argv: readonly string[],
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): ChildProcess {
  const [command, ...rest] = hostArgv(target, argv);
  return spawn(command as string, [...rest, ...args], {
    cwd: inRoot(root(target), dockerfile.stage(target).config.workdir),
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

function finish(child: ChildProcess, timeoutMs = 30_000): Promise<Exit> {
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (c: Buffer) => {
    stdout += c.toString();
  });
  child.stderr?.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`no exit within ${timeoutMs} ms; stderr: ${stderr.slice(-2_000)}`));
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const entrypoint = (target: Target) => dockerfile.stage(target).config.entrypoint ?? [];

const runImage = (target: Target, args: readonly string[], env = imageEnv(target)) =>
  finish(launch(target, entrypoint(target), args, env));

/** Waits for a line of stdout matching `pattern` (its first group), while the process runs. */
function awaitLine(child: ChildProcess, pattern: RegExp, timeoutMs = 30_000): Promise<string> {
  let seen = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no ${pattern} within ${timeoutMs} ms: ${seen}`)),
      timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      seen += chunk.toString();
      const match = pattern.exec(seen);
      if (match) {
        clearTimeout(timer);
        resolve(match[1] as string);
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", (chunk: Buffer) => {
      seen += chunk.toString();
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      reject(new Error(`exited ${code} before ${pattern}: ${seen.slice(-2_000)}`));
    });
  });
}

/** The target's HEALTHCHECK command, run from its root; `port` replaces the default one it probes. */
function healthcheck(target: Target, env: NodeJS.ProcessEnv, port?: { from: number; to: number }) {
  const argv = dockerfile.stage(target).config.healthcheck?.argv ?? [];
  const adjusted = port ? argv.map((w) => w.replaceAll(`:${port.from}/`, `:${port.to}/`)) : argv;
  return finish(launch(target, adjusted, [], env));
}

beforeAll(async () => {
  const started = performance.now();
  dockerfile = readDockerfile();
  work = await mkdtemp(join(tmpdir(), "darkbloom-images-"));
  const bin = join(work, "bin");
  await mkdir(bin);
  await symlink(process.execPath, join(bin, "node"));
  nodeOnlyPath = bin;
  built = await buildStages(dockerfile, {
    context: REPO,
    workDir: join(work, "stages"),
    // The npm cache holds every package; the registry is only asked what the cache lacks.
    env: { npm_config_prefer_offline: "true", npm_config_loglevel: "error" },
    log: (line) => process.stdout.write(`${line}\n`),
  });
  buildSeconds = (performance.now() - started) / 1000;
  process.stdout.write(`images: every stage built in ${buildSeconds.toFixed(1)} s\n`);
}, 600_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("the Dockerfile reader", () => {
  const parse = (text: string) => () => parseDockerfile(text);

  it("refuses what it does not read, rather than skipping it", () => {
    expect(parse("FROM a AS b\nADD x /y")).toThrow(DockerfileError);
    expect(parse("FROM a AS b\nENTRYPOINT node x.js")).toThrow(/exec form/);
    expect(parse("FROM a AS b\nCOPY src/*.js /app/")).toThrow(/wildcards/);
    expect(parse("FROM a AS b\nUSER darkbloom")).toThrow(/numeric/);
    expect(parse("FROM a AS b\nLABEL v=$UNSET")).toThrow(/not set/);
    expect(parse("FROM a\nRUN true")).toThrow(/name its stage/);
  });

  it("follows Docker's scoping of ARG, ENV and a stage's base", () => {
    const file = parseDockerfile(
      'ARG BASE=img:1\nARG V=2\nFROM $BASE AS one\nENV A=1 B="x y"\nWORKDIR /w\nUSER 1:1\n' +
        "FROM one AS two\nARG V\nLABEL v=$V\nRUN echo \\\n  $A\n",
    );
    const two = file.stage("two");
    expect(file.stage("one").from).toBe("img:1");
    expect(two.parent).toBe("one");
    expect(two.config).toMatchObject({
      env: { A: "1", B: "x y" },
      workdir: "/w",
      user: "1:1",
      labels: { v: "2" },
    });
    expect(two.steps).toEqual([
      { kind: "RUN", command: "echo $A", env: { A: "1", B: "x y", V: "2" }, workdir: "/w", line: 10 },
    ]);
  });
});

describe("images/Dockerfile", () => {
  it.each(TARGETS)(
    "$target runs as the operator's and the chart's user, its entrypoint the package's bin",
    async ({ target, workspace, bin }) => {
      const { config } = dockerfile.stage(target);
      const security = securityContext();
      expect(config.user).toBe(`${security.runAsUser}:${security.runAsUser}`);
      const chart = await readFile(join(REPO, "charts/darkbloom/templates/operator/deployment.yaml"), "utf8");
      expect(chart).toMatch(new RegExp(`runAsUser: ${security.runAsUser}\\b`));
      expect(chart).toMatch(new RegExp(`runAsGroup: ${security.runAsUser}\\b`));
      const manifest = JSON.parse(await readFile(join(REPO, workspace, "package.json"), "utf8"));
      expect(config.entrypoint).toEqual(["node", posix.join("/app", workspace, manifest.bin[bin])]);
      expect(config.env).toMatchObject({ NODE_ENV: "production", DARKBLOOM_DATA_DIR: DATA_DIR });
      expect(config.workdir).toBe("/app");
      expect(config.healthcheck?.argv[0]).toBe("node");
      expect(config.labels["org.opencontainers.image.title"]).toBe(`darkbloom-${target}`);
      // Released with the packages and the chart (Chart.yaml's appVersion is checked the same way).
      expect(config.labels["org.opencontainers.image.version"]).toBe(manifest.version);
      // The engines field allows the base image's Node.
      let stage = dockerfile.stage(target);
      while (stage.parent) stage = dockerfile.stage(stage.parent);
      const base = /^node:(\d+)\.(\d+)\.\d+-bookworm-slim$/.exec(stage.from);
      expect(base, stage.from).not.toBeNull();
      expect(Number(base?.[1])).toBe(20);
      expect(Number(base?.[2])).toBeGreaterThanOrEqual(10);
    },
  );

  it("is what the kubernetes tests' fake kubelet runs for a coordinator image", () => {
    expect(coordinatorEntrypoint).toEqual(entrypointOnHost("coordinator", dockerfile));
    expect(coordinatorEntrypoint[1]).toBe(join(REPO, "services/coordinator/bin/darkbloom-coordinator.js"));
  });
});

describe("the built images", () => {
  it.each(TARGETS)(
    "$target holds its production dependency closure and nothing else",
    async ({ target, workspace }) => {
      const lock = await readLockfile(REPO);
      const closure = lockfileClosure(lock, workspace);
      const app = inRoot(root(target), "/app");
      const installed = await installedPackages(app);
      const own = `node_modules/${lock.packages[workspace]?.name ?? ""}`;
      const extra = [...installed].filter((p) => p !== own && !closure.packages.has(p));
      expect(extra, "installed but not a production dependency").toEqual([]);
      const missing = [...closure.packages].filter((p) => !installed.has(p) && !closure.optionalOnly.has(p));
      expect(missing, "production dependencies not installed").toEqual([]);
      const names = [...installed].map(packageName);
      for (const name of DEV_ONLY) expect(names, name).not.toContain(name);
      expect([...installed].filter((p) => lock.packages[p]?.dev)).toEqual([]);
      // Every workspace link resolves: no dangling link to a workspace the image lacks.
      for (const location of installed) await stat(join(app, location));
    },
  );

  it.each(TARGETS)(
    "$target ships compiled JavaScript only: no sources, tests or test helpers",
    async ({ target }) => {
      const files = await filesOutsideNodeModules(inRoot(root(target), "/app"));
      expect(files.length).toBeGreaterThan(10);
      // Besides the JavaScript, the console's page, stylesheet and icon (what it serves as they are).
      const served = (f: string) => /^services\/console\/static\/[^/]+\.(html|css|svg)$/.test(f);
      if (target === "coordinator") expect(files.filter(served)).toHaveLength(3);
      const unexpected = files.filter(
        (f) =>
          (!/\.(js|mjs|json)$/.test(f) && !served(f)) ||
          /\.test\.js$/.test(f) ||
          /(^|\/)(src|testing|test-support)\//.test(f) ||
          /tsconfig/.test(f),
      );
      expect(unexpected).toEqual([]);
    },
  );

  it("gives the data directory to the image's user and names it in /etc/passwd", async () => {
    const passwd = await readFile(inRoot(root("coordinator"), "/etc/passwd"), "utf8");
    expect(passwd).toMatch(/^darkbloom:x:10001:10001:[^:]*:\/var\/lib\/darkbloom:/m);
    const data = await stat(inRoot(root("coordinator"), DATA_DIR));
    expect(data.isDirectory()).toBe(true);
    // Only root may give files away: elsewhere the --chown is read but not applied.
    if (built.chowned) expect([data.uid, data.gid]).toEqual([10001, 10001]);
  });

  it.each(TARGETS)("$target's entrypoint starts from the image's root: --help", async ({ target, bin }) => {
    const result = await runImage(target, ["--help"]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`Usage: ${bin}`);
  });
});

describe("the coordinator image", () => {
  let postgres: TestPostgres;
  beforeAll(async () => {
    postgres = await startTestPostgres();
  });
  afterAll(async () => {
    await postgres?.stop();
  });

  it("migrates with the Job's arguments, serves with the Deployment's, passes its probes and HEALTHCHECK, writes only its data directory", async () => {
    const database = await createTestDatabase(postgres.url);
    try {
      const before = await snapshot(root("coordinator"));
      const env = imageEnv("coordinator", {
        DATABASE_URL: database.url,
        DARKBLOOM_ADMIN_KEY: "dbadm_images-test",
      });
      // The migration Job's container: `migrate --json` (operator/src/controllers/coordinator/resources/migration-job.ts).
      const migrated = await runImage("coordinator", ["migrate", "--json"], env);
      expect(migrated.code, migrated.stderr).toBe(0);
      expect(JSON.parse(migrated.stdout)).toBeTypeOf("object");

      // The Deployment's arguments, on the loopback address and free ports instead of the pod's.
      const args = serveArgs(storedCoordinator()).map((arg, i, all) => {
        if (arg === "$(POD_IP)") return "127.0.0.1";
        if (all[i - 1] === "--port" || all[i - 1] === "--metrics-port") return "0";
        return arg.startsWith("/") ? inRoot(root("coordinator"), arg) : arg;
      });
      expect(args).toContain("check");
      const child = launch("coordinator", entrypoint("coordinator"), args, env);
      const exited = finish(child, 60_000);
      const url = await awaitLine(child, /listening on (http:\/\/\S+)/);
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      expect((await fetch(`${url}/readyz`)).status).toBe(200);
      // The console, from the files the image holds.
      const page = await fetch(`${url}/console`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('src="/console/app/main.js"');
      expect((await fetch(`${url}/console/app/main.js`)).status).toBe(200);
      // With the protocol's portable verifier, which the playground imports.
      expect((await fetch(`${url}/console/lib/protocol/web-verify.js`)).status).toBe(200);
      const port = Number(new URL(url).port);
      const check = await healthcheck("coordinator", { ...env, PORT: String(port) });
      expect(check.code, check.stderr).toBe(0);
      child.kill("SIGTERM");
      expect((await exited).code).toBe(0);
      // Down, the same check fails: it probes, it does not just exit 0.
      expect((await healthcheck("coordinator", { ...env, PORT: String(port) })).code).toBe(1);

      const written = changedPaths(before, await snapshot(root("coordinator")));
      const outside = written.filter((p) => p !== "var/lib/darkbloom" && !p.startsWith("var/lib/darkbloom/"));
      expect(outside, "written outside the data directory (the root filesystem is read-only)").toEqual([]);
    } finally {
      await database.drop();
    }
  }, 120_000);
});

describe("the operator image", () => {
  let env: OperatorTestEnv;
  beforeAll(async () => {
    env = await startOperatorEnv();
  });
  afterAll(async () => {
    await env?.close();
  });

  it("prints its CRDs, serves /healthz and /readyz against an API server, passes its HEALTHCHECK, writes nothing", async () => {
    const crds = await runImage("operator", ["crds"]);
    expect(crds.code, crds.stderr).toBe(0);
    expect(crds.stdout).toContain("kind: CustomResourceDefinition");

    const before = await snapshot(root("operator"));
    const kubeconfig = join(work, "operator-kubeconfig.yaml");
    await writeFile(kubeconfig, env.operatorKubeconfigYaml);
    const child = launch(
      "operator",
      entrypoint("operator"),
      [
        ...["run", "--kubeconfig", kubeconfig, "--no-leader-elect", "--log-level", "warn"],
        ...["--health-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"],
      ],
      imageEnv("operator"),
    );
    const exited = finish(child, 60_000);
    const health = await awaitLine(child, /health on (http:\/\/\S+)\/healthz/);
    expect((await fetch(`${health}/healthz`)).status).toBe(200);
    const deadline = Date.now() + 20_000;
    while ((await fetch(`${health}/readyz`)).status !== 200) {
      if (Date.now() > deadline) throw new Error("the operator never became ready");
      await new Promise((r) => setTimeout(r, 200));
    }
    const port = { from: 8081, to: Number(new URL(health).port) };
    const check = await healthcheck("operator", imageEnv("operator"), port);
    expect(check.code, check.stderr).toBe(0);
    child.kill("SIGTERM");
    expect((await exited).code).toBe(0);
    // The chart gives the operator a read-only root filesystem and no volume: it writes nothing.
    expect(changedPaths(before, await snapshot(root("operator")))).toEqual([]);
  }, 90_000);
});

describe("the provider image", () => {
  it("answers its HEALTHCHECK (`darkbloom status`) without systemd: not running, exit 3", async () => {
    const result = await healthcheck("provider", imageEnv("provider"));
    expect(result.code, result.stderr).toBe(3);
    expect(result.stdout).toContain(
      `daemon: not running (no PID file in ${inRoot(root("provider"), DATA_DIR)})`,
    );
  });

  it("loads llama.cpp's CPU binary from the image's node_modules", async () => {
    // A file beside the provider's package.json, so that the import resolves as the daemon's does
    // (node -e would not do: node-llama-cpp tests the binary in a child that inherits -e).
    const script = inRoot(root("provider"), "/app/services/provider/llama-check.mjs");
    await writeFile(
      script,
      'import { getLlama } from "node-llama-cpp";\n' +
        'const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, logLevel: "error" });\n' +
        "process.stdout.write(JSON.stringify({ gpu: llama.gpu, cpu: llama.cpuMathCores > 0 }));\n" +
        "await llama.dispose();\n",
    );
    try {
      const result = await finish(launch("provider", ["node"], [script], imageEnv("provider")), 60_000);
      expect(result.code, result.stderr).toBe(0);
      expect(JSON.parse(result.stdout)).toEqual({ gpu: false, cpu: true });
    } finally {
      await rm(script);
    }
  }, 90_000);
});
