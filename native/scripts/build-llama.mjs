#!/usr/bin/env node
// Builds the llama addon (native/llama/binding.gyp → darkbloom_llama.node), in three incremental
// stages, one line each:
// 1. llama.cpp's source: cloned from the git bundle that node-llama-cpp ships into native/build/llama.cpp
//    (once; again when the bundle's head changes). Nothing is downloaded.
// 2. Its static libraries (llama, ggml, ggml-cpu, ggml-base; ggml-cuda for a CUDA build, ggml-metal
//    and ggml-blas on a Mac, see llama-gpu.mjs) with cmake into native/build/llama.cpp-build (-cuda,
//    -metal), only when missing, older than the clone or configured otherwise (a few minutes for the
//    CPU; CUDA's kernels take longer).
// 3. The addon with node-gyp, only when a source under addon/llama or addon/common, the gyp file or the libraries
//    changed. What it links is written to native/build/llama-link.gypi, which the gyp file includes.
//    Everything generated lies in git-ignored folders (native/build, native/llama/build).
// A missing tool is one line and a skip; build.mjs turns a skip into a failure under
// DARKBLOOM_NATIVE_REQUIRED=1. Run alone: node native/scripts/build-llama.mjs.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { chooseLlamaGpu, gpuArchives, gpuCmakeArgs, gpuLinkFlags } from "./llama-gpu.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const say = (line) => process.stdout.write(`${line}\n`);
const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : 0);
const newest = (dir) =>
  readdirSync(dir, { withFileTypes: true }).reduce((t, e) => {
    const p = join(dir, e.name);
    return Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }, 0);

const build = join(root, "build");
const src = join(build, "llama.cpp");
const cloneStamp = join(build, "llama.cpp.cloned");
/** What the addon links (binding.gyp includes it), written by each build. */
const linkFile = join(build, "llama-link.gypi");
const cpuArchives = ["src/libllama.a", "ggml/src/libggml.a", "ggml/src/libggml-cpu.a"];
export const llamaAddonPath = join(root, "llama", "build", "Release", "darkbloom_llama.node");
const amxFixHeader = join(root, "llama", "amx-tile-config.h");

/**
 * Compiler flags for llama.cpp's code. ggml compiles for the CPU it is built on (GGML_NATIVE), which
 * is the CPU the addon runs on: it is built on the provider's machine and never shipped in an image.
 * On CPUs with AMX (Intel Sapphire Rapids and later) that includes ggml's AMX kernels, which GCC
 * miscompiles (12 here): its _tile_loadconfig tells the compiler the instruction reads 8 bytes of the
 * 64-byte tile configuration, the other stores are dropped, and the first prompt dies with SIGSEGV
 * in ggml_backend_amx_mul_mat (seen here in the addon and in llama.cpp's own llama-batched-bench
 * built with its defaults; ggml-org/llama.cpp#20824 is likely the same). Such a compiler gets
 * ../llama/amx-tile-config.h force-included, the instruction told it reads all 64 bytes, and the AMX
 * kernels work: on this project's 2-core Sapphire Rapids machine they make prefill twice as fast as
 * with AMX compiled out. Where the header cannot be passed (a path with spaces in it) the AMX
 * instructions are taken out of the target instead.
 */
export function llamaCompilerFlags() {
  if (process.arch !== "x64") return "";
  const include = spawnSync("c++", ["-print-file-name=include"], { encoding: "utf8" });
  const header = join(include.stdout?.trim() ?? "", "amxtileintrin.h");
  if (include.status !== 0 || !existsSync(header)) return "";
  if (!readFileSync(header, "utf8").includes("(const void **)__config")) return "";
  return /\s/.test(amxFixHeader) ? "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" : `-include ${amxFixHeader}`;
}

/** node-gyp: npm run puts its bundled one in npm_config_node_gyp; otherwise npm's own copy. */
export function nodeGyp() {
  return (
    process.env.npm_config_node_gyp ??
    join(
      execFileSync("npm", ["root", "-g"], { encoding: "utf8" }).trim(),
      "npm",
      "node_modules",
      "node-gyp",
      "bin",
      "node-gyp.js",
    )
  );
}

/** Headers from the installed Node (Debian's nodejs-dev puts them in /usr/include/node): no download. */
export function nodeDirArgs() {
  const dir =
    process.env.npm_config_nodedir ?? (existsSync("/usr/include/node/node_api.h") ? "/usr" : undefined);
  return dir ? [`--nodedir=${dir}`] : [];
}

const has = (cmd, args = ["--version"]) => {
  const r = spawnSync(cmd, args, { stdio: "ignore" });
  return !r.error && r.status === 0;
};

/** Runs quietly (compilers warn a lot about ggml); on failure the output's tail is shown. */
function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, {
    stdio: ["ignore", "pipe", "pipe"],
    maxBuffer: 256 * 1024 * 1024,
    ...options,
  });
  if (r.error || r.status !== 0) {
    const output = `${r.stdout ?? ""}${r.stderr ?? ""}`.split("\n").slice(-60).join("\n");
    process.stderr.write(`${output}\n`);
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.error?.message ?? r.status})`);
  }
  return r;
}

/**
 * Runs cmake's build with its percentage as progress: one line rewritten in place on a terminal, a
 * line per tenth elsewhere (CI logs). On failure the output's tail is shown, as run's.
 */
function runWithProgress(cmd, args, label) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    const tail = [];
    const keep = (line) => {
      tail.push(line);
      if (tail.length > 60) tail.shift();
    };
    const tty = process.stdout.isTTY;
    let shown = -1;
    let pending = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      const lines = (pending + chunk).split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        keep(line);
        const percent = Number(/^\[\s*(\d+)%\]/.exec(line)?.[1] ?? -1);
        if (percent < 0) continue;
        if (tty && percent !== shown) process.stdout.write(`\r${label} ${percent}%`);
        else if (!tty && Math.floor(percent / 10) > Math.floor(shown / 10)) say(`${label} ${percent}%`);
        shown = Math.max(shown, percent);
      }
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      for (const line of chunk.split("\n")) keep(line);
    });
    child.on("error", (err) => reject(new Error(`${cmd} ${args.join(" ")} failed (${err.message})`)));
    child.on("close", (code) => {
      if (tty && shown >= 0) process.stdout.write("\n");
      if (code === 0) return resolve();
      process.stderr.write(`${[...tail, pending].join("\n")}\n`);
      reject(new Error(`${cmd} ${args.join(" ")} failed (${code})`));
    });
  });
}

function bundlePath() {
  for (const dir of [join(root, "node_modules"), join(root, "..", "node_modules")]) {
    const p = join(dir, "node-llama-cpp", "llama", "gitRelease.bundle");
    if (existsSync(p)) return p;
  }
  return undefined;
}

/** @returns {Promise<"built" | "up-to-date" | "skipped" | "failed">} */
export async function buildLlama() {
  const skip = (reason) => {
    say(`native: llama: ${reason}; not built (the native llama engine is unavailable)`);
    return "skipped";
  };
  if (process.platform !== "linux" && process.platform !== "darwin")
    return skip(`no llama addon build for ${process.platform}`);
  for (const [tool, args] of [["git"], ["cmake"], ["make"], ["c++"], ["cc"]].map(([t]) => [t, ["--version"]]))
    if (!has(tool, args)) return skip(`${tool} not found (apt-get install -y cmake g++ make git)`);
  const bundle = bundlePath();
  if (!bundle) return skip("node-llama-cpp's llama.cpp bundle not found (npm install)");
  const gpu = chooseLlamaGpu();
  if (gpu.error) {
    process.stderr.write(`native: llama: ${gpu.error}\n`);
    return "failed";
  }
  if (gpu.note) say(`native: llama: ${gpu.note}`);
  // One build folder per backend: switching back and forth rebuilds neither.
  const libs = join(build, gpu.backend === "cpu" ? "llama.cpp-build" : `llama.cpp-build-${gpu.backend}`);
  const libsStamp = `${libs}.done`;
  const archives = [...cpuArchives, ...gpuArchives(gpu), "ggml/src/libggml-base.a"];

  try {
    // 1. The source, at the bundle's head.
    const head = execFileSync("git", ["bundle", "list-heads", bundle], { encoding: "utf8" }).split(/\s/)[0];
    const cloned = existsSync(join(src, ".git"))
      ? execFileSync("git", ["-C", src, "rev-parse", "HEAD"], { encoding: "utf8" }).trim()
      : "";
    if (!head) throw new Error(`cannot read the head of ${bundle}`);
    if (cloned !== head || !existsSync(cloneStamp)) {
      say(`native: llama: cloning llama.cpp ${head.slice(0, 7)} from node-llama-cpp's bundle…`);
      rmSync(src, { recursive: true, force: true });
      run("git", ["clone", "-q", bundle, src]);
      run("git", ["-C", src, "checkout", "-q", head]);
      writeFileSync(cloneStamp, `${head}\n`);
    }

    // 2. The static libraries, when missing, older than the clone or configured otherwise (the
    // stamp holds the configuration they were built with).
    const flags = llamaCompilerFlags();
    const gpuArgs = gpuCmakeArgs(gpu);
    const configuration = `flags: ${flags}${gpuArgs.length ? ` ${gpuArgs.join(" ")}` : ""}`;
    const stamped = existsSync(libsStamp) ? readFileSync(libsStamp, "utf8").split("\n")[1] : undefined;
    const libsFresh =
      mtime(libsStamp) > Math.max(mtime(cloneStamp), mtime(amxFixHeader)) &&
      stamped === configuration &&
      archives.every((a) => existsSync(join(libs, a)));
    if (!libsFresh) {
      say(
        gpu.backend === "cuda"
          ? `native: llama: building llama.cpp's static libraries with CUDA for ${gpu.architectures} (cmake; its kernels take a while)…`
          : `native: llama: building llama.cpp's static CPU libraries (cmake, a few minutes)…`,
      );
      const started = Date.now();
      if (mtime(join(libs, "CMakeCache.txt")) <= mtime(cloneStamp) || stamped !== configuration) {
        rmSync(libs, { recursive: true, force: true });
        run("cmake", [
          "-S",
          src,
          "-B",
          libs,
          "-DCMAKE_BUILD_TYPE=Release",
          `-DCMAKE_C_FLAGS=${flags}`,
          `-DCMAKE_CXX_FLAGS=${flags}`,
          "-DBUILD_SHARED_LIBS=OFF",
          "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
          "-DLLAMA_BUILD_COMMON=OFF",
          "-DLLAMA_BUILD_TESTS=OFF",
          "-DLLAMA_BUILD_EXAMPLES=OFF",
          "-DLLAMA_BUILD_TOOLS=OFF",
          "-DLLAMA_BUILD_SERVER=OFF",
          "-DLLAMA_CURL=OFF",
          // ggml's own thread pool: no libgomp to link, and no OpenMP spin-waiting between steps.
          "-DGGML_OPENMP=OFF",
          ...gpuArgs,
        ]);
      }
      await runWithProgress(
        "cmake",
        ["--build", libs, "--target", "llama", `-j${availableParallelism()}`],
        "native: llama: libraries",
      );
      writeFileSync(libsStamp, `${new Date().toISOString()}\n${configuration}\n`);
      say(`native: llama: libraries built in ${Math.round((Date.now() - started) / 1000)} s`);
    }

    // 3. The addon, linked against this backend's libraries (rewritten only when they change, so
    // that its time says when).
    const link = `${JSON.stringify(
      {
        variables: {
          llama_archives: archives.map((a) => join(libs, a)),
          llama_link_flags: gpuLinkFlags(gpu, libs),
        },
      },
      null,
      2,
    )}\n`;
    if (!existsSync(linkFile) || readFileSync(linkFile, "utf8") !== link) writeFileSync(linkFile, link);
    const gypFile = join(root, "llama", "binding.gyp");
    const inputs = Math.max(
      newest(join(root, "addon", "llama")),
      newest(join(root, "addon", "common")),
      mtime(gypFile),
      mtime(libsStamp),
      mtime(linkFile),
    );
    if (mtime(llamaAddonPath) > inputs) {
      say("native: darkbloom_llama is up to date");
      return "up-to-date";
    }
    const gyp = nodeGyp();
    if (!existsSync(gyp)) return skip(`node-gyp not found at ${gyp}`);
    say(`native: building darkbloom_llama (${gpu.backend})…`);
    run(process.execPath, [gyp, "rebuild", "--jobs=max", "--loglevel=warn", ...nodeDirArgs()], {
      cwd: join(root, "llama"),
    });
    say(`native: built ${llamaAddonPath}`);
    return "built";
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    // The macOS build (Metal) has not been run on a Mac by this project's CI: there a failure is a
    // skip with its reason, and the provider serves on node-llama-cpp's Metal binary as before.
    if (process.platform === "darwin") return skip(`the macOS build failed (${why})`);
    process.stderr.write(`native: llama: ${why}\n`);
    return "failed";
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const result = await buildLlama();
  const required = process.env.DARKBLOOM_NATIVE_REQUIRED === "1";
  process.exit(result === "failed" || (required && result === "skipped") ? 1 : 0);
}
