import { describe, expect, it } from "vitest";
import type { CpuTopology } from "../machine/topology.js";
import { chooseThreads, MIB_PER_THREAD } from "./threads.js";

const MIB = 2 ** 20;
const machine = (physicalCores: number, logicalCpus = physicalCores): CpuTopology => ({
  logicalCpus,
  physicalCores,
  source: "test",
});

describe("chooseThreads", () => {
  // [model, MiB of weights, topology, share, expected threads]
  const table: [string, number, CpuTopology, number | undefined, number][] = [
    ["tiny (1.1 MiB) on 2 cores", 1.1, machine(2), undefined, 1],
    ["tiny on 16 cores with SMT (32 logical)", 1.1, machine(16, 32), undefined, 1],
    ["just under one thread's worth", MIB_PER_THREAD - 1, machine(8), undefined, 1],
    ["two threads' worth", 2 * MIB_PER_THREAD, machine(8), undefined, 2],
    ["Qwen3-0.6B (608 MiB) on 2 cores", 608, machine(2), undefined, 2],
    ["Qwen3-0.6B on 2 cores with 4 SMT threads", 608, machine(2, 4), undefined, 2],
    ["Qwen3-0.6B on 16 cores", 608, machine(16), undefined, 9],
    ["Llama-3.2-1B shape (1.3 GiB) on 8 cores", 1300, machine(8), undefined, 8],
    ["an 8 GB model on 10 performance cores", 8 * 1024, machine(10, 12), undefined, 10],
    ["Qwen3-0.6B with a share of 1 core", 608, machine(2), 1, 1],
    ["a share larger than the machine is capped", 8 * 1024, machine(4), 64, 4],
    ["a zero share still runs one thread", 8 * 1024, machine(4), 0, 1],
    ["an empty file", 0, machine(4), undefined, 1],
  ];
  for (const [name, mib, topology, share, expected] of table) {
    it(name, () => {
      const choice = chooseThreads({ modelBytes: mib * MIB, topology, coreShare: share });
      expect(choice.threads).toBe(expected);
      expect(choice.threads).toBeLessThanOrEqual(topology.physicalCores);
      expect(choice.reason).toMatch(new RegExp(`^${expected} threads?: `));
    });
  }

  it("says why, naming a share and a cap", () => {
    expect(chooseThreads({ modelBytes: 1.1 * MIB, topology: machine(2) }).reason).toBe(
      "1 thread: 1.1 MiB of weights, one thread per 64 MiB (2 physical cores)",
    );
    expect(chooseThreads({ modelBytes: 608 * MIB, topology: machine(2) }).reason).toBe(
      "2 threads: 608 MiB of weights would use 9; capped at 2 physical cores",
    );
    const shared = chooseThreads({ modelBytes: 608 * MIB, topology: machine(4), coreShare: 2 });
    expect(shared).toEqual({
      threads: 2,
      cores: 2,
      reason: "2 threads: 608 MiB of weights would use 9; capped at a share of 2 of 4 physical cores",
    });
  });
});
