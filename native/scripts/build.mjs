#!/usr/bin/env node
// Builds the platform's addon (npm run build:native): the TPM addon on Linux when tss2's headers are
// installed (Debian: apt-get install -y libtss2-dev), the keychain addon on macOS. Anything missing is
// one line and exit 0: the provider then attests with its software key, and says so. Rebuilds only
// when a source is newer than the built addon, so `npm test` can call it every time.
// DARKBLOOM_NATIVE_REQUIRED=1 (CI) turns a skipped build into a failure.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const required = process.env.DARKBLOOM_NATIVE_REQUIRED === "1";
const say = (line) => process.stdout.write(`${line}\n`);
const target = { linux: "darkbloom_tpm", darwin: "darkbloom_keychain" }[process.platform];

function skip(reason) {
  say(`native: ${reason}; not built (the provider falls back to its software key)`);
  process.exit(required ? 1 : 0);
}

if (!target) skip(`no addon for ${process.platform}`);
if (process.platform === "linux") {
  const found = spawnSync("pkg-config", ["--exists", "tss2-esys", "tss2-tctildr", "tss2-mu", "tss2-rc"]);
  if (found.error || found.status !== 0) skip("tss2 headers not found (apt-get install -y libtss2-dev)");
}

const built = join(root, "build", "Release", `${target}.node`);
const newest = (dir) =>
  readdirSync(dir, { withFileTypes: true }).reduce((t, e) => {
    const p = join(dir, e.name);
    return Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }, 0);
if (
  existsSync(built) &&
  statSync(built).mtimeMs > Math.max(newest(join(root, "addon")), statSync(join(root, "binding.gyp")).mtimeMs)
) {
  say(`native: ${target} is up to date`);
  process.exit(0);
}

// npm run puts its bundled node-gyp in npm_config_node_gyp; otherwise use npm's own copy.
const gyp =
  process.env.npm_config_node_gyp ??
  join(
    execFileSync("npm", ["root", "-g"], { encoding: "utf8" }).trim(),
    "npm",
    "node_modules",
    "node-gyp",
    "bin",
    "node-gyp.js",
  );
if (!existsSync(gyp)) skip(`node-gyp not found at ${gyp}`);
// Headers from the installed Node (Debian's nodejs-dev puts them in /usr/include/node): no download.
const nodedir =
  process.env.npm_config_nodedir ?? (existsSync("/usr/include/node/node_api.h") ? "/usr" : undefined);
say(`native: building ${target}…`);
const result = spawnSync(
  process.execPath,
  [gyp, "rebuild", "--jobs=max", "--loglevel=warn", ...(nodedir ? [`--nodedir=${nodedir}`] : [])],
  { cwd: root, stdio: ["ignore", "inherit", "inherit"] },
);
if (result.status !== 0) {
  process.stderr.write(`native: building ${target} failed (exit ${result.status})\n`);
  process.exit(1);
}
say(`native: built ${built}`);
