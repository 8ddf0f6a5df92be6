import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir, readlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The daemon's binary hash: a SHA-256 over its code directory (the provider package's `dist/`, or
 * `src/` when run from source), so that any changed, added or removed file changes it. Release
 * tooling registers the same value as a release's binary_sha256, and `darkbloom update` checks it on
 * an unpacked bundle before switching to it.
 *
 * Definition: for every regular file and symbolic link under the directory (recursively), one line
 *   `<lowercase hex SHA-256 of the file's bytes>  <path relative to the directory, "/"-separated>\n`
 * (for a symbolic link, the SHA-256 of "symlink:" + its target), lines sorted by the path's UTF-8
 * bytes; the binary hash is the SHA-256 of the concatenated lines. (For files alone this is what
 * `sha256sum` prints, sorted by path, under LC_ALL=C.)
 */
export async function treeSha256(root: string): Promise<string> {
  const lines: Array<{ path: Buffer; line: string }> = [];
  await walk(root, "", lines);
  lines.sort((a, b) => Buffer.compare(a.path, b.path));
  const hash = createHash("sha256");
  for (const { line } of lines) hash.update(line);
  return hash.digest("hex");
}

async function walk(root: string, prefix: string, out: Array<{ path: Buffer; line: string }>): Promise<void> {
  const entries = await readdir(join(root, prefix), { withFileTypes: true });
  for (const entry of entries) {
    const rel = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isDirectory()) await walk(root, rel, out);
    else if (entry.isFile())
      out.push({ path: Buffer.from(rel), line: `${await fileSha256(join(root, rel))}  ${rel}\n` });
    else if (entry.isSymbolicLink()) {
      const target = await readlink(join(root, rel));
      const digest = createHash("sha256").update(`symlink:${target}`).digest("hex");
      out.push({ path: Buffer.from(rel), line: `${digest}  ${rel}\n` });
    }
  }
}

export function fileSha256(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash("sha256");
    createReadStream(path)
      .on("data", (chunk) => hash.update(chunk))
      .on("error", reject)
      .on("end", () => resolve(hash.digest("hex")));
  });
}

/** The directory the running daemon's code is loaded from (`…/provider/dist` or `…/provider/src`). */
export function daemonCodeRoot(): string {
  // This module is <root>/trust/binary-hash.{js,ts}.
  return dirname(dirname(fileURLToPath(import.meta.url)));
}

let cached: Promise<string> | undefined;

/** The running daemon's binary hash (computed once per process). */
export function daemonBinarySha256(): Promise<string> {
  cached ??= treeSha256(daemonCodeRoot());
  return cached;
}
