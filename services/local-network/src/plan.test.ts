import type { CpuTopology } from "@darkbloom/provider";
import { describe, expect, it } from "vitest";
import { MAX_AUTO_PROVIDERS, planProviders } from "./plan.js";

const MIB = 2 ** 20;
const cores = (n: number, logical = n): CpuTopology => ({
  logicalCpus: logical,
  physicalCores: n,
  source: "test",
});

describe("planProviders", () => {
  // [case, requested, MiB, topology, providers, threads]
  const table: [string, number | "auto", number, CpuTopology, number, number][] = [
    ["tiny on 2 cores: two 1-thread daemons", "auto", 1.1, cores(2), 2, 1],
    ["tiny on 2 cores with SMT (4 logical)", "auto", 1.1, cores(2, 4), 2, 1],
    ["tiny on 1 core", "auto", 1.1, cores(1), 1, 1],
    ["tiny on 16 cores: capped", "auto", 1.1, cores(16), MAX_AUTO_PROVIDERS, 1],
    ["Qwen3-0.6B on 2 cores: one daemon on both", "auto", 608, cores(2), 1, 2],
    ["Qwen3-0.6B on 16 cores: 9-thread daemons, one fits", "auto", 608, cores(16), 1, 9],
    ["Qwen3-0.6B on 32 cores: three fit", "auto", 608, cores(32), 3, 9],
    ["--providers 1 with tiny on 2 cores", 1, 1.1, cores(2), 1, 1],
    ["--providers 2 with Qwen3 on 2 cores: a core each", 2, 608, cores(2), 2, 1],
    ["--providers 1 with Qwen3 on 2 cores", 1, 608, cores(2), 1, 2],
    ["--providers 4 with Qwen3 on 2 cores: still one each", 4, 608, cores(2), 4, 1],
  ];
  for (const [name, requested, mib, topology, providers, threads] of table) {
    it(name, () => {
      const plan = planProviders({ requested, modelBytes: mib * MIB, model: "m", topology });
      expect({ providers: plan.providers, threads: plan.threads }).toEqual({ providers, threads });
    });
  }

  it("explains the choice, and warns when an explicit count oversubscribes", () => {
    expect(
      planProviders({ requested: "auto", modelBytes: 1.1 * MIB, model: "tiny", topology: cores(2) })
        .explanation,
    ).toEqual([
      "2 physical cores (test); tiny: 1 thread: 1.1 MiB of weights, one thread per 64 MiB (2 physical cores)",
      "2 providers x 1 thread: as many as fit the cores (--providers N to choose)",
    ]);
    const over = planProviders({
      requested: 4,
      modelBytes: 608 * MIB,
      model: "qwen3-0.6b",
      topology: cores(2),
    });
    expect(over.explanation[1]).toBe(
      "warning: 4 providers x 1 thread = 4 threads on 2 cores: oversubscribed (--providers auto fits them)",
    );
  });
});
