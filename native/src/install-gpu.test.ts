import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * `npm run install:gpu -- cuda` against a registry of its own (a local server speaking the npm
 * registry's packument and tarball protocol, which the real `npm pack` talks to) and a node_modules
 * of its own holding the lockfile's stand-ins. What cannot run here is CUDA itself: node-llama-cpp
 * is a stand-in that fails as the real one does on a machine without a GPU, or succeeds when told to.
 */
const script = join(dirname(fileURLToPath(import.meta.url)), "..", "scripts", "install-gpu.mjs");
const run = promisify(execFile);
const VERSION = "3.22.1";
const NAMES = ["@node-llama-cpp/linux-x64-cuda", "@node-llama-cpp/linux-x64-cuda-ext"];
const linuxX64 = process.platform === "linux" && process.arch === "x64";

let dir: string;
let server: Server;
let registry: string;
/** Tarballs by file name, and what each packument says of its integrity. */
const tarballs = new Map<string, Buffer>();
const packuments = new Map<string, object>();
/** Served instead of the packed tarball when set (a registry or proxy handing out other bytes). */
let tampered: Buffer | undefined;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-install-gpu-"));
  server = createServer((req, res) => {
    const path = decodeURIComponent(req.url ?? "");
    const file = path.startsWith("/tarballs/") ? tarballs.get(path.slice("/tarballs/".length)) : undefined;
    if (file) return res.writeHead(200, { "content-type": "application/octet-stream" }).end(tampered ?? file);
    const packument = packuments.get(path.slice(1).toLowerCase());
    if (packument)
      return res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(packument));
    res.writeHead(404, { "content-type": "application/json" }).end('{"error":"not found"}');
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  registry = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  for (const name of NAMES) {
    const source = join(dir, "src", name);
    await mkdir(join(source, "bins"), { recursive: true });
    await writeFile(join(source, "bins", "libggml-cuda.so"), `the ${name} binaries`);
    await writeFile(
      join(source, "package.json"),
      JSON.stringify({ name, version: VERSION, files: ["bins/"] }),
    );
    const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", join(dir, "src")], {
      cwd: source,
    });
    const [{ filename }] = JSON.parse(stdout) as [{ filename: string }];
    const bytes = await readFile(join(dir, "src", filename));
    tarballs.set(filename, bytes);
    const integrity = `sha512-${createHash("sha512").update(bytes).digest("base64")}`;
    const shasum = createHash("sha1").update(bytes).digest("hex");
    const tarball = `${registry}tarballs/${filename}`;
    packuments.set(name.toLowerCase(), {
      name,
      "dist-tags": { latest: VERSION },
      versions: { [VERSION]: { name, version: VERSION, dist: { tarball, integrity, shasum } } },
    });
  }
}, 60_000);

afterAll(async () => {
  server?.close();
  await rm(dir, { recursive: true, force: true });
});

/** A node_modules as `npm ci` leaves it: node-llama-cpp and the stand-ins of its CUDA packages. */
async function installation(): Promise<string> {
  const nodeModules = join(await mkdtemp(join(dir, "app-")), "node_modules");
  const nlc = join(nodeModules, "node-llama-cpp");
  await mkdir(nlc, { recursive: true });
  const optionalDependencies = Object.fromEntries(NAMES.map((n) => [n, VERSION]));
  await writeFile(
    join(nlc, "package.json"),
    JSON.stringify({
      name: "node-llama-cpp",
      version: VERSION,
      type: "module",
      exports: "./index.js",
      optionalDependencies,
    }),
  );
  await writeFile(
    join(nlc, "index.js"),
    `export async function getLlama() {
       if (process.env.FAKE_GPU !== "1") throw new Error("ggml_cuda_init: no CUDA-capable device is detected");
       return { gpu: "cuda", getGpuDeviceNames: async () => ["NVIDIA H100 80GB HBM3"], dispose: async () => {} };
     }`,
  );
  for (const name of NAMES) {
    await mkdir(join(nodeModules, name), { recursive: true });
    await writeFile(
      join(nodeModules, name, "package.json"),
      JSON.stringify({ name: "empty-platform-binaries", version: "1.0.0", private: true }),
    );
  }
  return nodeModules;
}

async function installGpu(nodeModules: string, env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await run(process.execPath, [script, "cuda", "--node-modules", nodeModules], {
      env: {
        ...process.env,
        npm_config_registry: registry,
        npm_config_cache: join(dir, "npm-cache"),
        ...env,
      },
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe.skipIf(!linuxX64)("npm run install:gpu -- cuda", () => {
  it("puts both CUDA packages of node-llama-cpp's version in place of the stand-ins, and says the GPU it found", async () => {
    const nodeModules = await installation();
    const r = await installGpu(nodeModules, { FAKE_GPU: "1" });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    for (const name of NAMES) {
      expect(JSON.parse(await readFile(join(nodeModules, name, "package.json"), "utf8"))).toMatchObject({
        name,
        version: VERSION,
      });
      expect(await readFile(join(nodeModules, name, "bins", "libggml-cuda.so"), "utf8")).toBe(
        `the ${name} binaries`,
      );
      expect(r.stdout).toContain(`install:gpu: ${name}@${VERSION} in ${join(nodeModules, name)}`);
    }
    expect(r.stdout).toMatch(/node-llama-cpp computes on cuda: NVIDIA H100 80GB HBM3\n$/);
    expect((await readdir(nodeModules)).filter((e) => e.startsWith(".install-gpu-"))).toEqual([]);
  }, 60_000);

  it("installs them but fails (exit 1) saying why when node-llama-cpp cannot use them here", async () => {
    const nodeModules = await installation();
    const r = await installGpu(nodeModules);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      "install:gpu: installed, but node-llama-cpp cannot use the cuda binaries on this machine: " +
        "ggml_cuda_init: no CUDA-capable device is detected\n",
    );
    expect(existsSync(join(nodeModules, NAMES[0] as string, "bins"))).toBe(true);
  }, 60_000);

  it("leaves the stand-ins when the registry's bytes do not match the packument's integrity", async () => {
    const nodeModules = await installation();
    tampered = Buffer.from("not the package");
    try {
      const r = await installGpu(nodeModules, {
        npm_config_cache: join(dir, "cold-cache"),
        npm_config_fetch_retries: "0",
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        /^install:gpu: could not fetch @node-llama-cpp\/linux-x64-cuda@3\.22\.1: .*integrity/m,
      );
    } finally {
      tampered = undefined;
    }
    for (const name of NAMES) {
      expect(JSON.parse(await readFile(join(nodeModules, name, "package.json"), "utf8")).name).toBe(
        "empty-platform-binaries",
      );
    }
  }, 60_000);

  it("refuses a kind it does not know, with the usage (exit 64)", async () => {
    await expect(run(process.execPath, [script, "metal"])).rejects.toMatchObject({
      code: 64,
      stderr: expect.stringContaining('unexpected argument "metal"'),
    });
  });
});
