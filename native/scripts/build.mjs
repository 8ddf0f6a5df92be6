#!/usr/bin/env node
// Builds the native addons (npm run build:native):
// - the platform's key addon: the TPM addon on Linux when tss2's headers are installed (Debian:
//   apt-get install -y libtss2-dev), the keychain addon on macOS. Missing: one line, and the provider
//   attests with its software key, and says so.
// - the llama addon (build-llama.mjs): llama.cpp's static libraries and darkbloom_llama.node.
// - the MLX addon (build-mlx.mjs), only where an MLX installation is found (DARKBLOOM_MLX_DIR, Homebrew's
//   or the Python wheel's); otherwise one line. CI has no MLX: its skip fails the build only under
//   DARKBLOOM_MLX_REQUIRED=1.
// Each is independent: a machine without tss2 still builds llama and vice versa. Both rebuild only
// when a source is newer than what was built, so `npm test` can call this every time.
// DARKBLOOM_NATIVE_REQUIRED=1 (CI) turns a skipped build into a failure.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildLlama, nodeDirArgs, nodeGyp } from "./build-llama.mjs";
import { buildMlx } from "./build-mlx.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const required = process.env.DARKBLOOM_NATIVE_REQUIRED === "1";
const say = (line) => process.stdout.write(`${line}\n`);

/** @returns {"built" | "up-to-date" | "skipped" | "failed"} */
function buildKeyAddon() {
  const target = { linux: "darkbloom_tpm", darwin: "darkbloom_keychain" }[process.platform];
  const skip = (reason) => {
    say(`native: ${reason}; not built (the provider falls back to its software key)`);
    return "skipped";
  };
  if (!target) return skip(`no key addon for ${process.platform}`);
  if (process.platform === "linux") {
    const found = spawnSync("pkg-config", ["--exists", "tss2-esys", "tss2-tctildr", "tss2-mu", "tss2-rc"]);
    if (found.error || found.status !== 0)
      return skip("tss2 headers not found (apt-get install -y libtss2-dev)");
  }

  const built = join(root, "build", "Release", `${target}.node`);
  // Only the platform addon's own sources count (addon/llama belongs to the llama build).
  const sourceDir = join(root, "addon", process.platform === "linux" ? "tpm" : "keychain");
  const newest = (dir) =>
    readdirSync(dir, { withFileTypes: true }).reduce((t, e) => {
      const p = join(dir, e.name);
      return Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
    }, 0);
  if (
    existsSync(built) &&
    statSync(built).mtimeMs > Math.max(newest(sourceDir), statSync(join(root, "binding.gyp")).mtimeMs)
  ) {
    say(`native: ${target} is up to date`);
    return "up-to-date";
  }

  const gyp = nodeGyp();
  if (!existsSync(gyp)) return skip(`node-gyp not found at ${gyp}`);
  say(`native: building ${target}…`);
  // configure + build, never `rebuild`: its clean step deletes native/build, where the llama build
  // keeps llama.cpp's clone and libraries.
  const gypRun = (command, ...args) =>
    spawnSync(process.execPath, [gyp, command, "--loglevel=warn", ...args, ...nodeDirArgs()], {
      cwd: root,
      stdio: ["ignore", "inherit", "inherit"],
    });
  let result = gypRun("configure");
  if (result.status === 0) result = gypRun("build", "--jobs=max");
  if (result.status !== 0) {
    process.stderr.write(`native: building ${target} failed (exit ${result.status})\n`);
    return "failed";
  }
  say(`native: built ${built}`);
  return "built";
}

const results = [buildKeyAddon(), await buildLlama()];
const mlx = buildMlx();
const failed =
  results.includes("failed") ||
  (required && results.includes("skipped")) ||
  mlx === "failed" ||
  (process.env.DARKBLOOM_MLX_REQUIRED === "1" && mlx === "skipped");
process.exit(failed ? 1 : 0);
