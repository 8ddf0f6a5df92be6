#!/usr/bin/env node
// Builds the MLX addon (native/mlx/binding.gyp → darkbloom_mlx.node) against an installed MLX, never a
// copy of MLX in this repository: DARKBLOOM_MLX_DIR (a prefix with include/mlx/mlx.h and lib/libmlx),
// else Homebrew's (/opt/homebrew, /usr/local), else the Python wheel's (site-packages/mlx, which holds
// include/ and lib/). None found: one line, and the MLX backend is not built. Rebuilt only when a
// source under addon/mlx or addon/common, the gyp file, or the MLX found (its path or its library)
// changed. Run alone: node native/scripts/build-mlx.mjs.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { nodeDirArgs, nodeGyp } from "./build-llama.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const say = (line) => process.stdout.write(`${line}\n`);
const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : 0);
const newest = (dir) =>
  readdirSync(dir, { withFileTypes: true }).reduce((t, e) => {
    const p = join(dir, e.name);
    return Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }, 0);

export const mlxAddonPath = join(root, "mlx", "build", "Release", "darkbloom_mlx.node");
const stamp = join(root, "mlx", "build", "mlx-dir.txt");

/** The library file of an MLX prefix, or undefined when the prefix is not an MLX installation. */
function mlxLibrary(prefix) {
  if (!existsSync(join(prefix, "include", "mlx", "mlx.h"))) return undefined;
  return ["libmlx.dylib", "libmlx.so"].map((f) => join(prefix, "lib", f)).find((p) => existsSync(p));
}

/** The Python wheel's mlx package directory (it carries include/ and lib/), if python3 finds one. */
function pythonMlx() {
  const r = spawnSync(
    "python3",
    [
      "-c",
      "import importlib.util as u; s = u.find_spec('mlx'); print(list(s.submodule_search_locations)[0] if s else '')",
    ],
    { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] },
  );
  const dir = r.status === 0 ? r.stdout.trim() : "";
  return dir || undefined;
}

/** The MLX prefix to build against: { dir, lib } or { missing: reason }. */
export function findMlx() {
  const env = process.env.DARKBLOOM_MLX_DIR;
  if (env) {
    const lib = mlxLibrary(env);
    return lib
      ? { dir: env, lib }
      : { missing: `DARKBLOOM_MLX_DIR=${env} has no include/mlx/mlx.h and lib/libmlx` };
  }
  for (const dir of ["/opt/homebrew", "/usr/local", pythonMlx()].filter(Boolean)) {
    const lib = mlxLibrary(dir);
    if (lib) return { dir, lib };
  }
  return { missing: "MLX not found (set DARKBLOOM_MLX_DIR)" };
}

/** @returns {"built" | "up-to-date" | "skipped" | "failed"} */
export function buildMlx() {
  const found = findMlx();
  if (found.missing) {
    say(`native: ${found.missing}: the mlx backend is not built`);
    return "skipped";
  }
  const inputs = Math.max(
    newest(join(root, "addon", "mlx")),
    newest(join(root, "addon", "common")),
    mtime(join(root, "mlx", "binding.gyp")),
    mtime(found.lib),
  );
  const builtFor = existsSync(stamp) ? readFileSync(stamp, "utf8").trim() : "";
  if (mtime(mlxAddonPath) > inputs && builtFor === found.dir) {
    say("native: darkbloom_mlx is up to date");
    return "up-to-date";
  }
  const gyp = nodeGyp();
  if (!existsSync(gyp)) {
    say(`native: node-gyp not found at ${gyp}: the mlx backend is not built`);
    return "skipped";
  }
  say(`native: building darkbloom_mlx against ${found.dir}…`);
  const r = spawnSync(process.execPath, [gyp, "rebuild", "--jobs=max", "--loglevel=warn", ...nodeDirArgs()], {
    cwd: join(root, "mlx"),
    env: { ...process.env, DARKBLOOM_MLX_DIR: found.dir },
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (r.error || r.status !== 0) {
    process.stderr.write(
      `native: building darkbloom_mlx failed (${r.error?.message ?? `exit ${r.status}`})\n`,
    );
    return "failed";
  }
  writeFileSync(stamp, `${found.dir}\n`);
  say(`native: built ${mlxAddonPath}`);
  return "built";
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const result = buildMlx();
  process.exit(result === "failed" ? 1 : 0);
}
