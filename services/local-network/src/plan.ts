/**
 * How many provider daemons the local network runs and with how many engine threads each, when
 * `--providers auto` (the default): every daemon gets the thread count the engine's own rule picks
 * for the model (engine/threads.ts in the provider: one thread per 64 MiB of weights, at most the
 * physical cores), and there are as many daemons as such thread counts fit in the physical cores, at
 * most MAX_AUTO_PROVIDERS. With `--providers N` the cores are shared out: each daemon's rule is capped
 * at floor(cores / N). Measured on 2 cores with `tiny` (docs/BENCHMARKS.md): one 2-thread daemon
 * served 282 tok/s, two 1-thread daemons 1,212 tok/s; a small model's decode step is too short to
 * split across threads, so cores are better used by more daemons, each decoding its own batch.
 */
import { type CpuTopology, chooseThreads } from "@darkbloom/provider";

/**
 * More daemons than this on one machine would mostly compete with the coordinator, PostgreSQL and
 * the clients on the same cores, and each holds its own copy of the context (KV cache) in memory.
 */
export const MAX_AUTO_PROVIDERS = 4;
/** The most `--providers` accepts. */
export const MAX_PROVIDERS = 16;

export interface NetworkPlan {
  providers: number;
  threads: number;
  /** Lines for the startup output: what was chosen and why. */
  explanation: string[];
}

export function planProviders(input: {
  requested: number | "auto";
  modelBytes: number;
  model: string;
  topology: CpuTopology;
}): NetworkPlan {
  const { topology } = input;
  const cores = topology.physicalCores;
  const machine = `${cores} physical core${cores === 1 ? "" : "s"} (${topology.source})`;
  if (input.requested === "auto") {
    const one = chooseThreads({ modelBytes: input.modelBytes, topology });
    const fit = Math.max(1, Math.floor(cores / one.threads));
    const providers = Math.min(fit, MAX_AUTO_PROVIDERS);
    return {
      providers,
      threads: one.threads,
      explanation: [
        `${machine}; ${input.model}: ${one.reason}`,
        `${providers} provider${providers === 1 ? "" : "s"} x ${one.threads} thread${one.threads === 1 ? "" : "s"}: ` +
          (fit > MAX_AUTO_PROVIDERS
            ? `as many as fit the cores, at most ${MAX_AUTO_PROVIDERS}`
            : "as many as fit the cores") +
          " (--providers N to choose)",
      ],
    };
  }
  const share = Math.max(1, Math.floor(cores / input.requested));
  const each = chooseThreads({ modelBytes: input.modelBytes, topology, coreShare: share });
  const total = each.threads * input.requested;
  return {
    providers: input.requested,
    threads: each.threads,
    explanation: [
      `${machine}; ${input.model}, ${input.requested} provider${input.requested === 1 ? "" : "s"}: ${each.reason}`,
      ...(total > cores
        ? [
            `warning: ${input.requested} providers x ${each.threads} thread${each.threads === 1 ? "" : "s"} = ${total} ` +
              `threads on ${cores} cores: oversubscribed (--providers auto fits them)`,
          ]
        : []),
    ],
  };
}
