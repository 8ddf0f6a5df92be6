/**
 * The CPU topology the engine's thread count is chosen from: how many physical cores this process may
 * run on. llama.cpp's CPU kernels are limited by each core's arithmetic and memory bandwidth, so a
 * second hardware thread of an SMT core (Intel Hyper-Threading) adds little and costs a thread at
 * every synchronisation point; on Apple silicon the efficiency cores are several times slower than
 * the performance cores and a ggml graph waits for its slowest thread. So: SMT siblings count once,
 * efficiency cores not at all, and CPUs this process may not use (affinity, a cgroup CPU quota) are
 * left out. Parsing is pure (fixtures in topology.test.ts); detectTopology() reads the machine.
 */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

export interface CpuTopology {
  /** Logical CPUs this process may run on (hardware threads, after affinity). */
  logicalCpus: number;
  /**
   * Physical cores among them: SMT siblings once, on Apple silicon only the performance cores; capped
   * by a cgroup CPU quota. At least 1.
   */
  physicalCores: number;
  /** Where physicalCores came from, for logs and `doctor`. */
  source: string;
}

/** A file of a sysfs/procfs tree, by its absolute path; undefined when absent or unreadable. */
export type FileReader = (path: string) => Promise<string | undefined>;

/** "0-3,8,10-11" (a Linux CPU list) → [0,1,2,3,8,10,11]; undefined when malformed. */
export function parseCpuList(text: string): number[] | undefined {
  const cpus: number[] = [];
  const trimmed = text.trim();
  if (trimmed === "") return [];
  for (const part of trimmed.split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) return undefined;
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo || hi - lo > 65_536) return undefined;
    for (let c = lo; c <= hi; c++) cpus.push(c);
  }
  return cpus;
}

/**
 * cgroup v2 `cpu.max` ("200000 100000" → 2 CPUs' worth; "max 100000" → no limit), rounded up: a
 * quota of 1.5 CPUs still runs two threads in parallel, only for part of each period.
 */
export function parseCpuMax(text: string): number | undefined {
  const [quota, period] = text.trim().split(/\s+/);
  if (quota === undefined || quota === "max") return undefined;
  const q = Number(quota);
  const p = Number(period ?? 100_000);
  if (!Number.isFinite(q) || !Number.isFinite(p) || q <= 0 || p <= 0) return undefined;
  return Math.max(1, Math.ceil(q / p));
}

/**
 * Linux: the online CPUs this process may use (`Cpus_allowed_list` of /proc/self/status), grouped
 * into physical cores by `topology/physical_package_id` + `topology/core_id` (or, without them, by
 * `topology/thread_siblings_list`), capped by the cgroup v2 quota. Undefined when sysfs says nothing.
 */
export async function linuxTopology(read: FileReader, root = "/"): Promise<CpuTopology | undefined> {
  const cpuDir = join(root, "sys/devices/system/cpu");
  const online = parseCpuList((await read(join(cpuDir, "online"))) ?? "");
  if (!online || online.length === 0) return undefined;
  const status = (await read(join(root, "proc/self/status"))) ?? "";
  const allowedText = /^Cpus_allowed_list:\s*(.+)$/m.exec(status)?.[1];
  const allowed = allowedText === undefined ? undefined : parseCpuList(allowedText);
  const cpus = allowed ? online.filter((c) => allowed.includes(c)) : online;
  if (cpus.length === 0) return undefined;
  const cores = new Set<string>();
  let fromSiblings = false;
  for (const cpu of cpus) {
    const topo = join(cpuDir, `cpu${cpu}`, "topology");
    const core = (await read(join(topo, "core_id")))?.trim();
    const pkg = (await read(join(topo, "physical_package_id")))?.trim();
    if (core !== undefined && core !== "" && pkg !== undefined && pkg !== "") {
      cores.add(`${pkg}:${core}`);
      continue;
    }
    const siblings = parseCpuList((await read(join(topo, "thread_siblings_list"))) ?? "");
    if (siblings && siblings.length > 0) {
      fromSiblings = true;
      cores.add(`s:${Math.min(...siblings)}`);
    } else {
      cores.add(`cpu:${cpu}`); // nothing known: a CPU of its own
    }
  }
  const quota = parseCpuMax((await read(join(root, "sys/fs/cgroup/cpu.max"))) ?? "");
  const physical = Math.max(1, Math.min(cores.size, quota ?? Number.POSITIVE_INFINITY));
  const parts = [
    `${cores.size} physical core${cores.size === 1 ? "" : "s"} of ${cpus.length} logical CPU${cpus.length === 1 ? "" : "s"}`,
    fromSiblings ? "from thread_siblings_list" : "from sysfs",
  ];
  if (quota !== undefined && quota < cores.size) parts.push(`cgroup quota ${quota}`);
  return { logicalCpus: cpus.length, physicalCores: physical, source: parts.join(", ") };
}

/** What `sysctl -n` printed for each name on macOS; undefined where the name does not exist. */
export interface SysctlValues {
  "hw.perflevel0.physicalcpu"?: string | undefined;
  "hw.physicalcpu"?: string | undefined;
  "hw.logicalcpu"?: string | undefined;
}

/**
 * macOS: the performance cores (`hw.perflevel0.physicalcpu`, Apple silicon), else every physical
 * core (`hw.physicalcpu`, Intel Macs); undefined when neither is a positive integer.
 */
export function darwinTopology(values: SysctlValues, logicalFallback: number): CpuTopology | undefined {
  const num = (v: string | undefined) => {
    const n = Number(v?.trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  };
  const logical = num(values["hw.logicalcpu"]) ?? logicalFallback;
  const perf = num(values["hw.perflevel0.physicalcpu"]);
  const physical = num(values["hw.physicalcpu"]);
  if (perf !== undefined) {
    const note = physical !== undefined && physical > perf ? ` (of ${physical})` : "";
    return {
      logicalCpus: logical,
      physicalCores: Math.min(perf, logical),
      source: `${perf} performance cores${note}, sysctl`,
    };
  }
  if (physical !== undefined)
    return {
      logicalCpus: logical,
      physicalCores: Math.min(physical, logical),
      source: `${physical} physical cores, sysctl`,
    };
  return undefined;
}

/** Everything else (and a Linux or macOS that says nothing): every CPU Node may use counts as a core. */
export function fallbackTopology(logical: number): CpuTopology {
  const n = Math.max(1, logical);
  return { logicalCpus: n, physicalCores: n, source: `${n} CPUs (availableParallelism; no topology)` };
}

export interface DetectOptions {
  platform?: NodeJS.Platform;
  /** Root of the sysfs/procfs tree (Linux; default "/"). */
  root?: string;
  read?: FileReader;
  /** `sysctl -n NAME` (macOS); undefined when the name does not exist. */
  sysctl?: (name: keyof SysctlValues) => Promise<string | undefined>;
  availableParallelism?: () => number;
}

const readText: FileReader = (path) => readFile(path, "utf8").catch(() => undefined);

const runSysctl = async (name: string): Promise<string | undefined> => {
  try {
    const { stdout } = await promisify(execFile)("sysctl", ["-n", name], { timeout: 2_000 });
    return stdout;
  } catch {
    return undefined;
  }
};

/** This machine's topology (never throws: an unreadable topology falls back to availableParallelism). */
export async function detectTopology(options: DetectOptions = {}): Promise<CpuTopology> {
  const platform = options.platform ?? process.platform;
  const logical = (options.availableParallelism ?? availableParallelism)();
  if (platform === "linux") {
    const found = await linuxTopology(options.read ?? readText, options.root ?? "/");
    if (found) return found;
  } else if (platform === "darwin") {
    const sysctl = options.sysctl ?? runSysctl;
    const values: SysctlValues = {
      "hw.perflevel0.physicalcpu": await sysctl("hw.perflevel0.physicalcpu"),
      "hw.physicalcpu": await sysctl("hw.physicalcpu"),
      "hw.logicalcpu": await sysctl("hw.logicalcpu"),
    };
    const found = darwinTopology(values, logical);
    if (found) return found;
  }
  return fallbackTopology(logical);
}
