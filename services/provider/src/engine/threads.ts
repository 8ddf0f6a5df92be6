/**
 * How many CPU threads an engine evaluates a model with when the setting is "auto" (the default).
 *
 * A decode step reads every weight once; llama.cpp splits each matrix of the graph across its threads
 * and the threads meet at a barrier after every operation (hundreds per token). A thread pays off when
 * its share of a token's work is large against those barriers, and the barriers get expensive when a
 * thread has to wait for a core: on a machine where other processes run (two daemons, a coordinator, a
 * build), a spinning ggml thread that loses its core stalls every other thread of the step.
 *
 * Measured on the project's 2-vCPU Xeon (2 physical cores, shared with a CI run while measuring;
 * `npm run bench:threads`, docs/BENCHMARKS.md "Engine threads"): the synthesized `tiny` model
 * (0.5 MiB Q8_0) decodes in 0.57 ms a token on 1 thread and 6.1 ms on 2 (batch 1; 1.55 against
 * 7.4 ms a step at batch 4): a step that small is all thread synchronisation, and 1 thread is 5-10x
 * faster. The Qwen3-0.6B shape (608 MiB Q8_0) decodes in 55-80 ms a token on 1 thread and 43-50 ms
 * on 2 on a quiet machine: its work splits. So: one thread per MIB_PER_THREAD of weights, at least
 * 1, at most the physical cores this engine may use (SMT siblings and efficiency cores do not count:
 * machine/topology.ts), and at most the share of them the caller grants (the local network gives
 * each of its daemons its share of the machine).
 * An explicit `--threads N` bypasses all of this.
 */
import { type CpuTopology, detectTopology } from "../machine/topology.js";

/**
 * Weights per thread, in MiB. Between the two measured points (0.5 MiB wants 1 thread, 608 MiB wants
 * every core of two); set where a thread's slice of a decode step is a few milliseconds of work on
 * the measured machine (80 ms / 608 MiB ≈ 0.13 ms a MiB on 1 thread → 64 MiB ≈ 8 ms), which is large against
 * the barriers of a step even when a core is briefly taken by another process.
 */
export const MIB_PER_THREAD = 64;

export interface ThreadChoiceInput {
  /** Bytes of the model's weights (the GGUF file's size). */
  modelBytes: number;
  topology: CpuTopology;
  /** Cores granted to this engine (e.g. its share of a machine running several daemons); default all. */
  coreShare?: number | undefined;
}

export interface ThreadChoice {
  threads: number;
  /** The cores the choice could use: physical cores, capped by the share. */
  cores: number;
  /** One line saying why, for the daemon's log and the local network's output. */
  reason: string;
}

/** The rule above, as a pure function. */
export function chooseThreads(input: ThreadChoiceInput): ThreadChoice {
  const physical = Math.max(1, Math.floor(input.topology.physicalCores));
  const share =
    input.coreShare === undefined ? physical : Math.max(1, Math.min(physical, Math.floor(input.coreShare)));
  const mib = Math.max(0, input.modelBytes) / 2 ** 20;
  const bySize = Math.max(1, Math.floor(mib / MIB_PER_THREAD));
  const threads = Math.min(bySize, share);
  const size = mib < 10 ? mib.toFixed(1) : mib.toFixed(0);
  const coresText =
    share < physical
      ? `a share of ${share} of ${physical} physical cores`
      : `${physical} physical core${physical === 1 ? "" : "s"}`;
  const why =
    bySize <= share
      ? `${size} MiB of weights, one thread per ${MIB_PER_THREAD} MiB (${coresText})`
      : `${size} MiB of weights would use ${bySize}; capped at ${coresText}`;
  return { threads, cores: share, reason: `${threads} thread${threads === 1 ? "" : "s"}: ${why}` };
}

/**
 * An engine's `threads` setting resolved per model: the explicit count, or for "auto" chooseThreads
 * over the machine's topology (detected once, at the first model that needs it). Shared by the
 * engines so that "auto" means the same on each.
 */
export class ThreadSetting {
  private topology: Promise<CpuTopology> | undefined;

  constructor(
    readonly threads: number | "auto",
    private readonly coreShare: number | undefined,
    topology?: CpuTopology | undefined,
  ) {
    if (topology) this.topology = Promise.resolve(topology);
  }

  private getTopology(): Promise<CpuTopology> {
    this.topology ??= detectTopology();
    return this.topology;
  }

  /** The most threads any model may get: the explicit count, or the cores "auto" is capped at. */
  async maxThreads(): Promise<number> {
    if (this.threads !== "auto") return this.threads;
    return Math.min((await this.getTopology()).physicalCores, this.coreShare ?? Number.POSITIVE_INFINITY);
  }

  /** The threads for a model of `modelBytes`, and why (logged at load). */
  async forModel(modelBytes: number): Promise<{ threads: number; reason: string }> {
    if (this.threads !== "auto") return { threads: this.threads, reason: "set by --threads" };
    const choice = chooseThreads({
      modelBytes,
      topology: await this.getTopology(),
      coreShare: this.coreShare,
    });
    return { threads: choice.threads, reason: `auto: ${choice.reason}` };
  }
}
