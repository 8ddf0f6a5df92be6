/**
 * llama.cpp's own programs, the references of the native benchmark: `llama-batched-bench` (the limit:
 * llama.cpp's batched decode with nothing around it) and `llama-server` (the peer a provider could run
 * instead of Darkbloom). Both are built here from the llama.cpp source that node-llama-cpp ships (the
 * clone `npm run build:native` makes in native/build/llama.cpp), with llama.cpp's own build defaults
 * and the compiler flags the core's libraries were built with (the same CPU code on both sides; on
 * AMX CPUs llama.cpp's own defaults crash, see build-llama.mjs), into native/build/llama.cpp-tools.
 * Nothing is downloaded.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { availableParallelism } from "node:os";
import { join, resolve } from "node:path";

/** The repository root is the working directory (npm run bench:native). */
const NATIVE = resolve("native");
const SOURCE = join(NATIVE, "build", "llama.cpp");
const CLONE_STAMP = join(NATIVE, "build", "llama.cpp.cloned");
const BUILD = join(NATIVE, "build", "llama.cpp-tools");
const BUILD_STAMP = join(NATIVE, "build", "llama.cpp-tools.done");
/**
 * The core's libraries' configuration, which `npm run build:native` writes: the CPU build's, else the
 * CUDA build's (native/scripts/llama-gpu.mjs), whose compiler flags for the CPU code are the same.
 * The programs are built for the CPU either way: the benchmark measures the CPU.
 */
const CORE_CACHES = ["llama.cpp-build", "llama.cpp-build-cuda"].map((dir) =>
  join(NATIVE, "build", dir, "CMakeCache.txt"),
);

export interface LlamaCppTools {
  server: string;
  batchedBench: string;
  /** The llama.cpp commit they were built from. */
  commit: string;
}

const mtime = (path: string): number => (existsSync(path) ? statSync(path).mtimeMs : 0);

function run(command: string, args: readonly string[]): void {
  const result = spawnSync(command, args, { stdio: ["ignore", "pipe", "pipe"], maxBuffer: 256 * 2 ** 20 });
  if (result.error || result.status !== 0) {
    const tail = `${result.stdout ?? ""}${result.stderr ?? ""}`.split("\n").slice(-40).join("\n");
    throw new Error(
      `${command} ${args.join(" ")} failed (${result.error?.message ?? result.status}):\n${tail}`,
    );
  }
}

/**
 * Builds the two programs when missing or older than the clone (a few minutes of both cores the first
 * time). The clone itself comes from `npm run build:native`, which the benchmark runs first.
 */
export function buildLlamaCppTools(progress: (line: string) => void): LlamaCppTools {
  if (!existsSync(CLONE_STAMP)) throw new Error("llama.cpp's source is not cloned: run npm run build:native");
  const server = join(BUILD, "bin", "llama-server");
  const batchedBench = join(BUILD, "bin", "llama-batched-bench");
  const commit = spawnSync("git", ["-C", SOURCE, "rev-parse", "--short", "HEAD"], {
    encoding: "utf8",
  }).stdout.trim();
  const flags = coreCompilerFlags();
  const configuration = `flags: ${flags}`;
  const stamped = existsSync(BUILD_STAMP) ? readFileSync(BUILD_STAMP, "utf8").split("\n")[1] : undefined;
  const fresh =
    mtime(BUILD_STAMP) > mtime(CLONE_STAMP) &&
    stamped === configuration &&
    existsSync(server) &&
    existsSync(batchedBench);
  if (!fresh) {
    progress(`building llama-server and llama-batched-bench (llama.cpp ${commit}; a few minutes)`);
    const started = Date.now();
    run("cmake", [
      "-S",
      SOURCE,
      "-B",
      BUILD,
      "-DCMAKE_BUILD_TYPE=Release",
      `-DCMAKE_C_FLAGS=${flags}`,
      `-DCMAKE_CXX_FLAGS=${flags}`,
      "-DBUILD_SHARED_LIBS=OFF",
      "-DLLAMA_BUILD_COMMON=ON",
      "-DLLAMA_BUILD_TOOLS=ON",
      "-DLLAMA_BUILD_SERVER=ON",
      "-DLLAMA_BUILD_TESTS=OFF",
      "-DLLAMA_BUILD_EXAMPLES=OFF",
      "-DLLAMA_BUILD_APP=OFF",
      // No web UI (it would be fetched), no HTTPS or curl: nothing here may reach the network.
      "-DLLAMA_BUILD_UI=OFF",
      "-DLLAMA_USE_PREBUILT_UI=OFF",
      "-DLLAMA_OPENSSL=OFF",
      "-DLLAMA_CURL=OFF",
    ]);
    run("cmake", [
      "--build",
      BUILD,
      "--target",
      "llama-server",
      "llama-batched-bench",
      `-j${availableParallelism()}`,
    ]);
    writeFileSync(BUILD_STAMP, `${new Date().toISOString()}\n${configuration}\n`);
    progress(`built in ${Math.round((Date.now() - started) / 1000)} s`);
  }
  return { server, batchedBench, commit };
}

/** CMAKE_CXX_FLAGS of the core's libraries (their C flags are the same). */
function coreCompilerFlags(): string {
  const cache = CORE_CACHES.find((path) => existsSync(path));
  if (!cache) throw new Error("llama.cpp's libraries are not built: run npm run build:native");
  const line = readFileSync(cache, "utf8")
    .split("\n")
    .find((l) => l.startsWith("CMAKE_CXX_FLAGS:"));
  return line?.slice(line.indexOf("=") + 1).trim() ?? "";
}

/** One line of `llama-batched-bench --output-format jsonl`. */
export interface BatchedBenchRow {
  /** Prompt tokens per sequence. */
  pp: number;
  /** Generated tokens per sequence. */
  tg: number;
  /** Sequences decoded together (the batch). */
  pl: number;
  /** Prompt evaluation: seconds and tokens per second (all sequences' prompts in one batch). */
  t_pp: number;
  speed_pp: number;
  /** Decoding: seconds and tokens per second (pl × tg tokens, every sequence busy every step). */
  t_tg: number;
  speed_tg: number;
}

/** The measurement lines of llama-batched-bench's jsonl output (its logs are other lines). */
export function parseBatchedBench(output: string): BatchedBenchRow[] {
  const rows: BatchedBenchRow[] = [];
  for (const line of output.split("\n")) {
    const text = line.trim();
    if (!text.startsWith("{")) continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      continue;
    }
    const row = value as Partial<Record<keyof BatchedBenchRow, unknown>>;
    const fields = ["pp", "tg", "pl", "t_pp", "speed_pp", "t_tg", "speed_tg"] as const;
    if (fields.every((f) => typeof row[f] === "number" && Number.isFinite(row[f])))
      rows.push(row as BatchedBenchRow);
  }
  return rows;
}

export interface BatchedBenchOptions {
  model: string;
  threads: number;
  promptTokens: number;
  genTokens: number;
  batches: readonly number[];
  /** KV cells per sequence: the engines' context per row. */
  contextPerRow: number;
}

/**
 * One run of llama-batched-bench over every batch size, configured as the native core runs: F16 KV
 * cache without flash attention (the core turns it on only for quantized caches), `threads` for both
 * decode and prompt, a KV stream per sequence of as many cells as a core row holds. The cells matter:
 * without flash attention V is stored transposed, and decode slows with a row's cells, used or not
 * (at batch 4 on qwen3-0.6b, 336 cells per row decode 5-10% faster than 1,024; docs/BENCHMARKS.md).
 */
export async function runBatchedBench(
  tools: LlamaCppTools,
  options: BatchedBenchOptions,
): Promise<BatchedBenchRow[]> {
  const widest = Math.max(...options.batches);
  const args = [
    "-m",
    options.model,
    "-c",
    String(widest * options.contextPerRow),
    "-npp",
    String(options.promptTokens),
    "-ntg",
    String(options.genTokens),
    "-npl",
    options.batches.join(","),
    "-t",
    String(options.threads),
    "-tb",
    String(options.threads),
    "-fa",
    "off",
    "--output-format",
    "jsonl",
  ];
  const output = await new Promise<string>((resolvePromise, reject) => {
    const child = spawn(tools.batchedBench, args, { stdio: ["ignore", "pipe", "pipe"] });
    let text = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      text += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      text += chunk;
    });
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0
        ? resolvePromise(text)
        : reject(new Error(`llama-batched-bench exited ${code}: ${text.split("\n").slice(-10).join("\n")}`)),
    );
  });
  const rows = parseBatchedBench(output);
  if (rows.length !== options.batches.length)
    throw new Error(`llama-batched-bench printed ${rows.length} measurements, not ${options.batches.length}`);
  return rows;
}

/** A free TCP port on 127.0.0.1 (llama-server takes a port number, not 0). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const address = server.address();
  await new Promise<void>((ok) => server.close(() => ok()));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

export interface LlamaServer {
  baseUrl: string;
  stop(): Promise<void>;
}

/**
 * llama-server on the model as a provider would start it: its defaults, with `slots` parallel
 * sequences of `contextPerSlot` tokens each and `threads` threads. Resolves once /health says ready.
 */
export async function startLlamaServer(
  tools: LlamaCppTools,
  options: { model: string; threads: number; slots: number; contextPerSlot: number },
): Promise<LlamaServer> {
  const port = await freePort();
  const child = spawn(
    tools.server,
    [
      "-m",
      options.model,
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      "-t",
      String(options.threads),
      "-tb",
      String(options.threads),
      "-np",
      String(options.slots),
      "-c",
      String(options.slots * options.contextPerSlot),
      "--no-webui",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let log = "";
  const keep = (chunk: Buffer) => {
    log = (log + chunk.toString("utf8")).slice(-8192);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const exited = new Promise<number | null>((ok) => child.on("exit", (code) => ok(code)));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
  };
  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`llama-server exited ${child.exitCode}:\n${log}`);
    const ok = await fetch(`${baseUrl}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return { baseUrl: `${baseUrl}/v1`, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`llama-server was not ready in 120 s:\n${log}`);
    }
    await new Promise((ok2) => setTimeout(ok2, 250));
  }
}
