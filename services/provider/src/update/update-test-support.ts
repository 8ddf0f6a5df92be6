import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { treeSha256 } from "../trust/binary-hash.js";

/** A release bundle built for tests: a .tar.gz of package.json and dist/ (real tar). */
export interface TestBundle {
  version: string;
  bytes: Buffer;
  bundleSha256: string;
  binarySha256: string;
}

/**
 * Builds a bundle whose dist/bin/darkbloom.js prints `printsVersion` (default: the version) for
 * --version. `entries` adds raw tar members (e.g. unsafe paths) via a prepared directory layout.
 */
export async function buildBundle(
  version: string,
  options: { printsVersion?: string; topLevelDir?: string; extraFiles?: Record<string, string> } = {},
): Promise<TestBundle> {
  const work = await mkdtemp(join(tmpdir(), "darkbloom-bundle-"));
  try {
    const root = options.topLevelDir ? join(work, options.topLevelDir) : work;
    await mkdir(join(root, "dist", "bin"), { recursive: true });
    await writeFile(join(root, "package.json"), JSON.stringify({ name: "@darkbloom/provider", version }));
    await writeFile(
      join(root, "dist", "bin", "darkbloom.js"),
      `if (process.argv.includes("--version")) console.log(${JSON.stringify(options.printsVersion ?? version)});\n`,
    );
    await writeFile(join(root, "dist", "daemon.js"), `export const VERSION = ${JSON.stringify(version)};\n`);
    for (const [path, content] of Object.entries(options.extraFiles ?? {})) {
      await mkdir(join(root, path, ".."), { recursive: true });
      await writeFile(join(root, path), content);
    }
    const binarySha256 = await treeSha256(join(root, "dist"));
    const archive = join(work, "..", `${work.split("/").pop()}.tar.gz`);
    await run("tar", ["-czf", archive, "-C", work, "."]);
    const bytes = await readFile(archive);
    await rm(archive, { force: true });
    return { version, bytes, bundleSha256: createHash("sha256").update(bytes).digest("hex"), binarySha256 };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** A .tar.gz whose member escapes the extraction directory (`../escaped.txt`). */
export async function buildEscapingBundle(): Promise<Buffer> {
  const work = await mkdtemp(join(tmpdir(), "darkbloom-evil-"));
  try {
    await mkdir(join(work, "in"), { recursive: true });
    await writeFile(join(work, "escaped.txt"), "gotcha");
    const archive = join(work, "evil.tar.gz");
    await run("tar", ["-czPf", archive, "-C", join(work, "in"), "../escaped.txt"]);
    return await readFile(archive);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** A static HTTP server for bundles; `files` maps a path to its bytes. */
export async function serveFiles(
  files: Map<string, Buffer>,
): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const body = files.get((req.url ?? "").split("?")[0] ?? "");
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-length": body.length, "content-type": "application/gzip" });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function run(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(command, args, (error, _stdout, stderr) =>
      error ? reject(new Error(stderr || error.message)) : resolve(),
    );
  });
}
