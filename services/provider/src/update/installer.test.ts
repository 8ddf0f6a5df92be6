import { lstat, mkdtemp, readdir, readFile, readlink, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { runCli } from "../cli/program.js";
import { testIo } from "../cli/test-io.js";
import { installRelease, type LatestRelease, UpdateError } from "./installer.js";
import { buildBundle, buildEscapingBundle, type TestBundle } from "./update-test-support.js";

/**
 * `darkbloom update` against a local HTTP server that plays the coordinator
 * (GET /v1/releases/latest) and the bundle host.
 */
let server: Server;
let base: string;
let latest: (LatestRelease & { status?: number }) | undefined;
const files = new Map<string, Buffer>();
const bundles: Record<string, TestBundle> = {};

beforeAll(async () => {
  server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/v1/releases/latest") {
      if (!latest) {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            error: {
              code: "release_not_found",
              message: "none",
              type: "invalid_request_error",
              param: "platform",
            },
          }),
        );
        return;
      }
      expect(url.searchParams.get("platform")).toBe("linux-x64");
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(latest));
      return;
    }
    const body = files.get(url.pathname);
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-length": body.length }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  for (const v of ["0.2.0", "0.3.0"]) bundles[v] = await buildBundle(v);
  bundles.nested = await buildBundle("0.4.0", { topLevelDir: "darkbloom-0.4.0" });
  bundles.liar = await buildBundle("0.5.0", { printsVersion: "0.4.9" });
});
afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

let home: string;
let dataDir: string;
let installDir: string;
beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), "darkbloom-update-"));
  dataDir = join(home, "data");
  installDir = join(dataDir, "releases");
  files.clear();
  latest = undefined;
});
afterEach(async () => {
  await rm(home, { recursive: true, force: true });
});

function publish(bundle: TestBundle, over: Partial<LatestRelease> = {}): LatestRelease {
  const path = `/bundles/darkbloom-${bundle.version}.tar.gz`;
  files.set(path, bundle.bytes);
  latest = {
    version: bundle.version,
    platform: "linux-x64",
    binary_sha256: bundle.binarySha256,
    bundle_sha256: bundle.bundleSha256,
    url: `${base}${path}`,
    ...over,
  };
  return latest;
}

async function update(...args: string[]) {
  const t = testIo();
  const code = await runCli(["update", "--coordinator", base, "--data-dir", dataDir, ...args], t.io, {
    defaults: { home },
    cwd: home,
    platform: "linux",
    arch: "x64",
    fetch: globalThis.fetch,
  });
  return { code, stdout: t.stdout(), stderr: t.stderr() };
}

const current = () => readlink(join(installDir, "current")).catch(() => undefined);
const leftovers = async () => (await readdir(installDir).catch(() => [])).filter((n) => n.startsWith("."));

describe("darkbloom update", () => {
  it("--check reports a newer release and installs nothing", async () => {
    publish(bundles["0.2.0"]!);
    const r = await update("--check");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /^update available: 0\.1\.0 -> 0\.2\.0 \(http:\/\/127\.0\.0\.1:\d+\/bundles\/darkbloom-0\.2\.0\.tar\.gz\)\n/,
    );
    expect(r.stdout).toMatch(/running daemon 0\.1\.0, binary [0-9a-f]{64}\n/);
    expect(await current()).toBeUndefined();
  });

  it("downloads, verifies and switches `current` atomically; then it is up to date", async () => {
    publish(bundles["0.2.0"]!);
    const r = await update();
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`installed 0.2.0 in ${join(installDir, "0.2.0")}`);
    expect(await current()).toBe("0.2.0");
    expect((await lstat(join(installDir, "current"))).isSymbolicLink()).toBe(true);
    expect(await readFile(join(installDir, "current", "dist", "bin", "darkbloom.js"), "utf8")).toContain(
      "0.2.0",
    );
    expect(await readdir(join(installDir, "downloads"))).toEqual([]);
    expect(await leftovers()).toEqual([]);
    expect((await update()).stdout).toBe("up to date: 0.2.0 (newest release for linux-x64 is 0.2.0)\n");

    publish(bundles["0.3.0"]!);
    expect((await update("--check")).stdout).toContain("update available: 0.2.0 -> 0.3.0");
    const next = await update();
    expect(next.code).toBe(0);
    expect(next.stdout).toContain("(previous: 0.2.0)");
    expect(await current()).toBe("0.3.0");
    // A bundle packed under one top-level directory works too; the oldest release is pruned.
    publish(bundles.nested!);
    expect((await update()).code).toBe(0);
    expect(await current()).toBe("0.4.0");
    expect((await readdir(installDir)).sort()).toEqual(["0.3.0", "0.4.0", "current", "downloads"]);
  });

  it("refuses a bundle whose SHA-256 is not the release's, and keeps the current release", async () => {
    publish(bundles["0.2.0"]!);
    await update();
    publish(bundles["0.3.0"]!, { bundle_sha256: "0".repeat(64) });
    const r = await update();
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^darkbloom: SHA-256 mismatch: expected 0{64}, got [0-9a-f]{64}; the download was deleted\n$/,
    );
    expect(await current()).toBe("0.2.0");
    expect((await readdir(installDir)).sort()).toEqual(["0.2.0", "current", "downloads"]);
  });

  it("refuses a bundle whose binary hash is not the release's (what the daemon would attest)", async () => {
    publish(bundles["0.2.0"]!);
    await update();
    publish(bundles["0.3.0"]!, { binary_sha256: "e".repeat(64) });
    const r = await update();
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`is not the release's ${"e".repeat(64)}; nothing was installed`);
    expect(await current()).toBe("0.2.0");
    expect(await leftovers()).toEqual([]);
    expect((await readdir(installDir)).includes("0.3.0")).toBe(false);
  });

  it("refuses a release that does not run as its version", async () => {
    publish(bundles.liar!);
    const r = await update();
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('the new release does not run: --version printed "0.4.9", expected 0.5.0');
    expect(await current()).toBeUndefined();
    expect(await leftovers()).toEqual([]);
  });

  it("says so when the coordinator has no release for this platform", async () => {
    const r = await update();
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("darkbloom: the coordinator has no active release for linux-x64\n");
  });

  it("rejects a bad --platform as a usage error", async () => {
    const r = await update("--platform", "Linux x64");
    expect(r.code).toBe(64);
  });
});

describe("installRelease", () => {
  it("rolls `current` back when the switched-to release fails its check", async () => {
    publish(bundles["0.2.0"]!);
    await update();
    const release = publish(bundles["0.3.0"]!);
    const checked: string[] = [];
    const error = await installRelease({
      release,
      installDir,
      healthCheck: async (entry) => {
        checked.push(entry);
        if (entry.includes(`${join("releases", "current")}`)) throw new Error("exited with status 1");
      },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UpdateError);
    expect((error as Error).message).toBe(
      "0.3.0 failed its check after the switch (exited with status 1); rolled back to 0.2.0",
    );
    expect(checked).toHaveLength(2);
    expect(await current()).toBe("0.2.0");
    expect((await readdir(installDir)).sort()).toEqual(["0.2.0", "current", "downloads"]);
  });

  it("refuses an archive with a path escaping the install directory", async () => {
    const evil = await buildEscapingBundle();
    files.set("/evil.tar.gz", evil);
    const { createHash } = await import("node:crypto");
    const error = await installRelease({
      release: {
        version: "0.9.0",
        platform: "linux-x64",
        binary_sha256: "a".repeat(64),
        bundle_sha256: createHash("sha256").update(evil).digest("hex"),
        url: `${base}/evil.tar.gz`,
      },
      installDir,
    }).catch((e: unknown) => e);
    expect((error as Error).message).toBe(
      'the bundle holds an unsafe path "../escaped.txt"; nothing was installed',
    );
    await expect(lstat(join(installDir, "..", "escaped.txt"))).rejects.toThrow(/ENOENT/);
    expect(await leftovers()).toEqual([]);
  });
});
