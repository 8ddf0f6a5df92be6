/**
 * `doctor`'s thread check: warns when the engine threads of every darkbloom daemon on this machine
 * together (this configuration's included) exceed its physical cores, or when one configuration alone
 * asks for more threads than there are physical cores. llama.cpp's threads spin at a barrier after
 * every operation of a decode step: a thread that has to wait for a core stalls its whole step, so an
 * oversubscribed machine serves far less than the same cores split evenly (`tiny` on 2 cores: one
 * 2-thread daemon served 282 tok/s, two 1-thread daemons 1,212 tok/s; docs/BENCHMARKS.md). SMT
 * siblings count once (machine/topology.ts). A warning, not a failure: the daemon still serves.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { ModelFile } from "../engine/engine.js";
import { chooseThreads } from "../engine/threads.js";
import type { CpuTopology } from "../machine/topology.js";

/** A running process: its id and command line. */
export interface ProcessEntry {
  pid: number;
  args: string;
}

/** A provider daemon found running, and the threads its command line asks for. */
export interface RunningDaemon {
  pid: number;
  /** From `--threads N` on its command line; undefined when not given there (auto, env or YAML). */
  threads: number | "auto" | undefined;
}

export interface ThreadsCheckInput {
  configured: number | "auto";
  /** The models this configuration serves (sizes "auto" from them). */
  served: readonly ModelFile[];
  topology: CpuTopology;
  /** Provider daemons running on the machine; undefined when they could not be listed. */
  running: readonly RunningDaemon[] | undefined;
  /** The daemon of this data directory, when it runs (it is this configuration, not another one). */
  ownPid: number | undefined;
}

export interface ThreadsCheckResult {
  ok: boolean;
  /** A problem worth a WARN line (ok stays true: nothing prevents serving). */
  warn: boolean;
  detail: string;
  fix?: string;
}

/** `ps -Ao pid=,args=` output → entries (lines that do not start with a pid are skipped). */
export function parsePs(output: string): ProcessEntry[] {
  const entries: ProcessEntry[] = [];
  for (const line of output.split("\n")) {
    const m = /^\s*(\d+)\s+(.+?)\s*$/.exec(line);
    if (m) entries.push({ pid: Number(m[1]), args: m[2] as string });
  }
  return entries;
}

/**
 * Provider daemons among the processes: `darkbloom serve` (the bin, `darkbloom.js`, or the dist
 * script run by node), not this process.
 */
export function findDaemons(processes: readonly ProcessEntry[], selfPid: number): RunningDaemon[] {
  const serve = /(?:^|[\s/])darkbloom(?:\.js)?\s+serve(?:\s|$)/;
  return processes
    .filter((p) => p.pid !== selfPid && serve.test(p.args))
    .map((p) => ({ pid: p.pid, threads: threadsArg(p.args) }));
}

/** `--threads N`, `--threads=N` or `--threads auto` on a command line (the last one wins, as commander). */
export function threadsArg(args: string): number | "auto" | undefined {
  let found: number | "auto" | undefined;
  for (const m of args.matchAll(/(?:^|\s)--threads(?:=|\s+)(\S+)/g)) {
    const value = (m[1] as string).toLowerCase();
    if (value === "auto") found = "auto";
    else if (/^\d+$/.test(value) && Number(value) >= 1) found = Number(value);
  }
  return found;
}

/**
 * What "auto" resolves to for these models: the largest per-model choice (they may decode at once).
 * MLX checkpoints are not sized: MLX picks its own threads.
 */
export function autoThreads(served: readonly ModelFile[], topology: CpuTopology): number {
  const sized = served.filter((m) => m.format !== "mlx");
  return Math.max(1, ...sized.map((m) => chooseThreads({ modelBytes: m.sizeBytes, topology }).threads));
}

export function threadsCheck(input: ThreadsCheckInput): ThreadsCheckResult {
  const { topology } = input;
  const cores = topology.physicalCores;
  // MLX checkpoints run on MLX's own threads (the engine's thread count does not apply to them), so
  // a daemon serving only MLX models adds no engine threads of its own to the count.
  const mlxOnly = input.served.length > 0 && input.served.every((m) => m.format === "mlx");
  const mine = mlxOnly
    ? 0
    : input.configured === "auto"
      ? autoThreads(input.served, topology)
      : input.configured;
  const mineText = mlxOnly
    ? "MLX models only: MLX picks its own threads (--threads does not apply)"
    : input.configured === "auto"
      ? `auto: ${mine} thread${mine === 1 ? "" : "s"}${input.served.length === 0 ? " (no model to size it)" : ""}`
      : `--threads ${mine}`;
  const others = (input.running ?? []).filter((d) => d.pid !== input.ownPid);
  // Daemons that do not say on their command line are assumed to choose as this configuration does
  // (the usual case: one machine, daemons started alike).
  const otherThreads = others.map((d) => (typeof d.threads === "number" ? d.threads : mine));
  const total = mine + otherThreads.reduce((a, b) => a + b, 0);
  const daemons = others.length + 1;
  const machine = `${cores} physical core${cores === 1 ? "" : "s"} (${topology.source})`;
  const listed = input.running === undefined ? "; other daemons not checked (ps failed)" : "";
  if (mine > cores) {
    return {
      ok: true,
      warn: true,
      detail: `${mineText} exceeds the ${machine}: threads beyond the cores wait at every step's barrier`,
      fix: `--threads ${Math.max(1, Math.floor(cores / daemons))} or --threads auto (DARKBLOOM_THREADS)`,
    };
  }
  if (total > cores) {
    const each = Math.max(1, Math.floor(cores / daemons));
    const pids = others.map((d) => d.pid).join(", ");
    return {
      ok: true,
      warn: true,
      detail:
        `${daemons} darkbloom daemons on this machine (this one and pid ${pids}) would run ${total} engine ` +
        `threads on ${machine}: oversubscribed`,
      fix:
        each * daemons <= cores
          ? `give each daemon --threads ${each} (${cores} cores / ${daemons} daemons), or run fewer daemons`
          : `run at most ${cores} daemon${cores === 1 ? "" : "s"} with --threads 1`,
    };
  }
  return {
    ok: true,
    warn: false,
    detail:
      `${mineText}; ${daemons === 1 ? "no other daemon" : `${daemons} daemons, ${total} threads in all`} ` +
      `on ${machine}${listed}`,
  };
}

/** `ps -Ao pid=,args=` on this machine (Linux and macOS); undefined when it cannot run. */
export async function listProcesses(): Promise<ProcessEntry[] | undefined> {
  try {
    const { stdout } = await promisify(execFile)("ps", ["-Ao", "pid=,args="], {
      timeout: 5_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    return parsePs(stdout);
  } catch {
    return undefined;
  }
}
