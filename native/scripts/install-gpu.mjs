#!/usr/bin/env node
// npm run install:gpu -- cuda|vulkan [--node-modules DIR]
//
// Puts node-llama-cpp's GPU binary packages in place of the stand-ins the lockfile installs
// (native/stubs/empty-platform-binaries: the real ones are hundreds of MB, and most machines have no
// use for them), then checks that node-llama-cpp loads them. The packages are those of the installed
// node-llama-cpp's version, fetched with `npm pack` (the configured registry, npm's integrity check).
// `npm ci` puts the stand-ins back: run this again after it. Exit 64 on bad usage, 1 when a package
// cannot be fetched or node-llama-cpp cannot use the GPU binaries here (no driver, no device).
import { execFileSync, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const say = (line) => process.stdout.write(`${line}\n`);
const fail = (line, code = 1) => {
  process.stderr.write(`install:gpu: ${line}\n`);
  process.exit(code);
};
const KINDS = ["cuda", "vulkan"];
const USAGE = "usage: npm run install:gpu -- cuda|vulkan [--node-modules DIR]";

const args = process.argv.slice(2);
let kind;
let nodeModules = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "node_modules");
for (let i = 0; i < args.length; i++) {
  const arg = args[i];
  if (arg === "--node-modules") {
    const value = args[++i];
    if (!value) fail(`--node-modules needs a directory (${USAGE})`, 64);
    nodeModules = value;
  } else if (KINDS.includes(arg) && kind === undefined) kind = arg;
  else fail(`unexpected argument ${JSON.stringify(arg)} (${USAGE})`, 64);
}
if (!kind) fail(`which GPU binaries? (${USAGE})`, 64);

const platform = { linux: "linux", win32: "win" }[process.platform];
if (!platform || process.arch !== "x64") {
  fail(`node-llama-cpp has no ${kind} binaries for ${process.platform}-${process.arch}`, 64);
}
const manifestPath = join(nodeModules, "node-llama-cpp", "package.json");
if (!existsSync(manifestPath)) fail(`node-llama-cpp is not installed in ${nodeModules} (run npm ci first)`);
const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
// CUDA comes as two packages (the ext one holds the large CUDA libraries); Vulkan as one.
const names = [
  `@node-llama-cpp/${platform}-x64-${kind}`,
  `@node-llama-cpp/${platform}-x64-${kind}-ext`,
].filter((name) => manifest.optionalDependencies?.[name] !== undefined);
if (names.length === 0)
  fail(`node-llama-cpp ${manifest.version} lists no ${kind} package for ${platform}-x64`);

// Staged next to where the packages go: one file system, so each swap is a rename.
const staging = mkdtempSync(join(nodeModules, ".install-gpu-"));
try {
  for (const name of names) {
    const version = manifest.optionalDependencies[name];
    const spec = `${name}@${version}`;
    say(`install:gpu: fetching ${spec} (npm pack; hundreds of MB for CUDA)…`);
    const packed = spawnSync("npm", ["pack", spec, "--json", "--pack-destination", staging], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      maxBuffer: 64 * 1024 * 1024,
    });
    if (packed.status !== 0) {
      // npm's own words, without its log-file pointer.
      const why = (packed.stderr ?? "")
        .split("\n")
        .filter((l) => /^npm (error|ERR!)/.test(l))
        .map((l) => l.replace(/^npm (error|ERR!) ?/, "").trim())
        .filter((l) => l !== "" && !l.startsWith("A complete log"))
        .slice(0, 2)
        .join(" ");
      fail(`could not fetch ${spec}: ${why || packed.error?.message || `npm exited ${packed.status}`}`);
    }
    // npm names the file after the package (scope-name-version.tgz).
    const [{ filename }] = JSON.parse(packed.stdout);
    const unpacked = join(staging, `unpacked-${filename}`);
    mkdirSync(unpacked);
    execFileSync("tar", ["-xzf", join(staging, filename), "-C", unpacked]);
    const got = JSON.parse(readFileSync(join(unpacked, "package", "package.json"), "utf8"));
    if (got.name !== name || got.version !== version) {
      fail(`${spec} unpacked as ${got.name}@${got.version}`);
    }
    const target = join(nodeModules, name);
    const previous = join(staging, `previous-${name.replace("/", "_")}`);
    mkdirSync(dirname(target), { recursive: true });
    if (existsSync(target)) renameSync(target, previous);
    renameSync(join(unpacked, "package"), target);
    say(`install:gpu: ${spec} in ${target} (${megabytes(target)} MB)`);
  }
} finally {
  rmSync(staging, { recursive: true, force: true });
}

// node-llama-cpp picks the binaries by the GPU it finds; asked for this kind, it loads them or says why.
const check = spawnSync(
  process.execPath,
  [
    "--input-type=module",
    "-e",
    `import { getLlama } from "node-llama-cpp";
     try {
       const llama = await getLlama({ gpu: ${JSON.stringify(kind)}, build: "never", skipDownload: true, logLevel: "error" });
       process.stdout.write(JSON.stringify({ gpu: llama.gpu, devices: await llama.getGpuDeviceNames() }));
       await llama.dispose();
     } catch (error) {
       process.stderr.write(String(error?.message ?? error));
       process.exit(1);
     }`,
  ],
  { cwd: dirname(nodeModules), encoding: "utf8", timeout: 180_000 },
);
if (check.status !== 0) {
  const why = (check.stderr || check.error?.message || "").trim().split("\n").filter(Boolean).join(" ");
  fail(`installed, but node-llama-cpp cannot use the ${kind} binaries on this machine: ${why}`);
}
const { gpu, devices } = JSON.parse(check.stdout);
say(`install:gpu: node-llama-cpp computes on ${gpu}: ${devices.join(", ") || "(no device name reported)"}`);

function megabytes(dir) {
  const size = (p) =>
    statSync(p).isDirectory()
      ? readdirSync(p).reduce((sum, e) => sum + size(join(p, e)), 0)
      : statSync(p).size;
  return (size(dir) / 1e6).toFixed(1);
}
