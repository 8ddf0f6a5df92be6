import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { lstat, mkdir, readdir, readlink, rename, rm, stat, symlink } from "node:fs/promises";
import { join } from "node:path";
import { compareSemver, isSemver } from "@darkbloom/protocol";
import { type DownloadProgress, downloadFile } from "../download/download.js";
import { treeSha256 } from "../trust/binary-hash.js";

/**
 * The install layout of `darkbloom update`, under the install directory (default
 * `<dataDir>/releases`):
 *
 *   <version>/                 an unpacked bundle: package.json, dist/bin/darkbloom.js, …
 *   current -> <version>       relative symlink to the release in use; switched atomically by
 *                              creating `.current-<random>` and renaming it over `current`
 *   .staging-<random>/         a bundle being unpacked and checked (removed on failure)
 *   downloads/<file>.tar.gz    the bundle while it downloads (resumable, removed once installed)
 *
 * A bundle is a gzip'd tar whose root (or single top-level directory) holds `dist/bin/darkbloom.js`.
 * Its binary hash (treeSha256 of `dist/`) must equal the release's binary_sha256: that is the hash the
 * installed daemon attests, so a bundle that would not pass the coordinator's allowlist is refused
 * before it is switched to. The service runs `<install dir>/current/dist/bin/darkbloom.js`.
 */
export const INSTALL_LAYOUT = {
  current: "current",
  downloads: "downloads",
  entry: join("dist", "bin", "darkbloom.js"),
} as const;

/** A release as GET /v1/releases/latest describes it. */
export interface LatestRelease {
  version: string;
  platform: string;
  binary_sha256: string;
  bundle_sha256: string;
  url: string;
}

export interface InstallOptions {
  release: LatestRelease;
  installDir: string;
  fetch?: typeof fetch;
  onProgress?: (progress: DownloadProgress) => void;
  /**
   * Checks that an installed entry point runs and is the release's version (default: `node <entry>
   * --version` must print it). Run on the staged bundle and again through `current` after the switch;
   * a failure after the switch rolls `current` back.
   */
  healthCheck?: (entry: string, version: string) => Promise<void>;
}

export interface InstallResult {
  version: string;
  /** The directory of the installed release. */
  dir: string;
  /** The release `current` pointed to before (undefined on a first install). */
  previous: string | undefined;
}

/** An update that could not be installed; nothing was switched (or the switch was rolled back). */
export class UpdateError extends Error {
  override readonly name = "UpdateError";
}

/** The version `current` points to, undefined when nothing is installed there. */
export async function installedVersion(installDir: string): Promise<string | undefined> {
  try {
    const target = await readlink(join(installDir, INSTALL_LAYOUT.current));
    return target.replace(/\/+$/, "");
  } catch {
    return undefined;
  }
}

/** Whether `candidate` is newer than `installed` (semantic-version precedence). */
export function isNewer(candidate: string, installed: string): boolean {
  if (!isSemver(candidate)) return false;
  if (!isSemver(installed)) return true;
  return compareSemver(candidate, installed) > 0;
}

const VERSION_DIR = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;
const HEX64 = /^[0-9a-f]{64}$/;

/**
 * Downloads the release's bundle (resumable, SHA-256 checked), unpacks it into a staging directory,
 * checks its binary hash and that it runs, moves it to `<installDir>/<version>` and switches
 * `current` to it atomically; if the switched-to release fails its health check, `current` is
 * switched back and the new release removed.
 */
export async function installRelease(options: InstallOptions): Promise<InstallResult> {
  const { release, installDir } = options;
  if (!VERSION_DIR.test(release.version))
    throw new UpdateError(`release version ${JSON.stringify(release.version)} is not a semantic version`);
  if (!HEX64.test(release.bundle_sha256) || !HEX64.test(release.binary_sha256)) {
    throw new UpdateError("the release's bundle_sha256 and binary_sha256 must be 64 lowercase hex digits");
  }
  const healthCheck = options.healthCheck ?? runVersionCheck;
  await mkdir(installDir, { recursive: true, mode: 0o755 });
  const previous = await installedVersion(installDir);
  if (previous === release.version)
    throw new UpdateError(`${release.version} is already the current release`);
  const downloads = join(installDir, INSTALL_LAYOUT.downloads);
  const archive = join(downloads, `darkbloom-${release.version}-${release.platform}.tar.gz`);
  await downloadFile({
    url: release.url,
    dest: archive,
    sha256: release.bundle_sha256,
    ...(options.fetch ? { fetch: options.fetch } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });

  const staging = join(installDir, `.staging-${randomBytes(6).toString("hex")}`);
  const target = join(installDir, release.version);
  let moved = false;
  try {
    await mkdir(staging, { mode: 0o755 });
    await unpack(archive, staging);
    const root = await bundleRoot(staging);
    const binary = await treeSha256(join(root, "dist"));
    if (binary !== release.binary_sha256) {
      throw new UpdateError(
        `the bundle's binary hash ${binary} is not the release's ${release.binary_sha256}; nothing was installed`,
      );
    }
    await healthCheck(join(root, INSTALL_LAYOUT.entry), release.version).catch((error: unknown) => {
      throw new UpdateError(
        `the new release does not run: ${(error as Error).message}; nothing was installed`,
      );
    });
    if (await exists(target)) await rm(target, { recursive: true, force: true }); // a leftover of a failed run
    await rename(root, target);
    moved = true;
    await switchCurrent(installDir, release.version);
    try {
      await healthCheck(join(installDir, INSTALL_LAYOUT.current, INSTALL_LAYOUT.entry), release.version);
    } catch (error) {
      if (previous !== undefined) await switchCurrent(installDir, previous);
      else await rm(join(installDir, INSTALL_LAYOUT.current), { force: true });
      await rm(target, { recursive: true, force: true });
      throw new UpdateError(
        `${release.version} failed its check after the switch (${(error as Error).message}); ` +
          (previous !== undefined ? `rolled back to ${previous}` : "removed it"),
      );
    }
    await rm(archive, { force: true });
    await pruneOld(installDir, [release.version, previous]);
    return { version: release.version, dir: target, previous };
  } catch (error) {
    if (!moved) await rm(target, { recursive: true, force: true }).catch(() => undefined);
    throw error;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** Points `current` at `version`: a new symlink renamed over the old one (atomic on POSIX). */
export async function switchCurrent(installDir: string, version: string): Promise<void> {
  const temp = join(installDir, `.current-${randomBytes(6).toString("hex")}`);
  await symlink(version, temp);
  try {
    await rename(temp, join(installDir, INSTALL_LAYOUT.current));
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/** Lists the archive first and refuses absolute paths, `..` components and links leaving the bundle. */
async function unpack(archive: string, into: string): Promise<void> {
  const listing = await run("tar", ["-tvzf", archive]).catch((error: Error) => {
    throw new UpdateError(`the bundle is not a readable .tar.gz: ${error.message}`);
  });
  const names = await run("tar", ["-tzf", archive]);
  for (const name of names.split("\n").filter((n) => n !== "")) {
    if (name.startsWith("/") || name.split("/").includes("..")) {
      throw new UpdateError(`the bundle holds an unsafe path ${JSON.stringify(name)}; nothing was installed`);
    }
  }
  for (const line of listing.split("\n")) {
    const link = / -> (.*)$/.exec(line)?.[1];
    if (
      line.startsWith("h") ||
      (link !== undefined && (link.startsWith("/") || link.split("/").includes("..")))
    ) {
      throw new UpdateError("the bundle holds a link that points outside it; nothing was installed");
    }
  }
  await run("tar", ["-xzf", archive, "-C", into, "--no-same-owner"]).catch((error: Error) => {
    throw new UpdateError(`could not unpack the bundle: ${error.message}`);
  });
}

/** The directory holding dist/bin/darkbloom.js: the staging root or its single top-level directory. */
async function bundleRoot(staging: string): Promise<string> {
  if (await exists(join(staging, INSTALL_LAYOUT.entry))) return staging;
  const entries = (await readdir(staging, { withFileTypes: true })).filter((e) => e.isDirectory());
  const only = entries.length === 1 ? entries[0] : undefined;
  if (only && (await exists(join(staging, only.name, INSTALL_LAYOUT.entry)))) return join(staging, only.name);
  throw new UpdateError(`the bundle has no ${INSTALL_LAYOUT.entry}; nothing was installed`);
}

/** Keeps the given versions (current and previous); removes other installed releases. */
async function pruneOld(installDir: string, keep: Array<string | undefined>): Promise<void> {
  for (const entry of await readdir(installDir, { withFileTypes: true })) {
    if (!entry.isDirectory() || !VERSION_DIR.test(entry.name) || keep.includes(entry.name)) continue;
    await rm(join(installDir, entry.name), { recursive: true, force: true });
  }
}

async function runVersionCheck(entry: string, version: string): Promise<void> {
  const out = (await run(process.execPath, [entry, "--version"], 30_000)).trim();
  if (out !== version)
    throw new Error(`--version printed ${JSON.stringify(out.slice(0, 80))}, expected ${version}`);
}

function run(command: string, args: string[], timeout = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      { timeout, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) reject(new Error(stderr.trim().split("\n").at(-1) || error.message));
        else resolve(stdout);
      },
    );
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether `path` is a symbolic link (the `current` pointer). */
export async function isSymlink(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isSymbolicLink();
  } catch {
    return false;
  }
}
