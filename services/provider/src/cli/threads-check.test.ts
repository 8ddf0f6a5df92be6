import { describe, expect, it } from "vitest";
import type { ModelFile } from "../engine/engine.js";
import type { CpuTopology } from "../machine/topology.js";
import { autoThreads, findDaemons, parsePs, threadsArg, threadsCheck } from "./threads-check.js";

const MIB = 2 ** 20;
const twoCores: CpuTopology = { logicalCpus: 2, physicalCores: 2, source: "sysfs" };
const smt: CpuTopology = { logicalCpus: 8, physicalCores: 4, source: "sysfs" };
const model = (id: string, mib: number): ModelFile => ({
  id,
  path: `/models/${id}.gguf`,
  sizeBytes: mib * MIB,
  quantization: "Q8_0",
  sha256: "0".repeat(64),
  architecture: "qwen3",
  contextLength: 2048,
});
const tiny = model("tiny", 1.1);
const qwen = model("qwen3-0.6b", 608);

describe("finding daemons", () => {
  it("parses ps output and keeps `darkbloom serve` processes other than this one", () => {
    const ps = parsePs(
      [
        "    1 /sbin/init",
        "  200 node /opt/darkbloom/services/provider/bin/darkbloom.js serve --coordinator http://x --threads 1",
        "  201 /usr/local/bin/darkbloom serve",
        "  202 darkbloom serve --threads=auto",
        "  203 node bin/darkbloom.js doctor",
        "  204 less darkbloom-serve.log",
        "  205 node /x/darkbloom.js serve --threads 3 --threads 2",
        "garbage line",
        "",
      ].join("\n"),
    );
    expect(ps).toHaveLength(7);
    expect(findDaemons(ps, 201)).toEqual([
      { pid: 200, threads: 1 },
      { pid: 202, threads: "auto" },
      { pid: 205, threads: 2 },
    ]);
  });

  it("reads --threads as commander does (last wins, bad values ignored)", () => {
    expect(threadsArg("darkbloom serve")).toBeUndefined();
    expect(threadsArg("darkbloom serve --threads 0")).toBeUndefined();
    expect(threadsArg("darkbloom serve --threads AUTO")).toBe("auto");
    expect(threadsArg("darkbloom serve --threads=4 --max-threads 9")).toBe(4);
  });
});

describe("threadsCheck", () => {
  it("passes one auto daemon on any machine", () => {
    for (const served of [[tiny], [qwen], [tiny, qwen], []]) {
      const r = threadsCheck({
        configured: "auto",
        served,
        topology: twoCores,
        running: [],
        ownPid: undefined,
      });
      expect(r).toMatchObject({ ok: true, warn: false });
    }
    expect(autoThreads([tiny, qwen], twoCores)).toBe(2);
    expect(autoThreads([tiny], smt)).toBe(1);
  });

  it("does not count threads for MLX checkpoints, which MLX threads itself", () => {
    const mlx: ModelFile = {
      ...qwen,
      id: "qwen3-0.6b-mlx-4bit",
      path: "/models/qwen3-0.6b-mlx-4bit",
      format: "mlx",
    };
    // --threads 8 on 2 cores would exceed them, but nothing of this daemon runs on those threads.
    const alone = threadsCheck({
      configured: 8,
      served: [mlx],
      topology: twoCores,
      running: [],
      ownPid: undefined,
    });
    expect(alone).toMatchObject({ ok: true, warn: false });
    expect(alone.detail).toMatch(/^MLX models only: MLX picks its own threads/);
    // Beside a GGUF model the GGUF model sizes "auto" alone; another auto daemon makes 2 + 2 on 2 cores.
    expect(autoThreads([mlx, tiny], twoCores)).toBe(autoThreads([tiny], twoCores));
    const mixed = threadsCheck({
      configured: "auto",
      served: [mlx, qwen],
      topology: twoCores,
      running: [{ pid: 7, threads: "auto" }],
      ownPid: undefined,
    });
    expect(mixed).toMatchObject({ ok: true, warn: true });
  });

  it("warns when one configuration asks for more threads than physical cores (SMT siblings once)", () => {
    const r = threadsCheck({ configured: 8, served: [qwen], topology: smt, running: [], ownPid: undefined });
    expect(r.warn).toBe(true);
    expect(r.ok).toBe(true);
    expect(r.detail).toMatch(/^--threads 8 exceeds the 4 physical cores \(sysfs\)/);
    expect(r.fix).toBe("--threads 4 or --threads auto (DARKBLOOM_THREADS)");
    const four = threadsCheck({
      configured: 4,
      served: [qwen],
      topology: smt,
      running: [],
      ownPid: undefined,
    });
    expect(four.warn).toBe(false);
  });

  it("warns when the daemons together oversubscribe: auto on Qwen3 twice on 2 cores", () => {
    const r = threadsCheck({
      configured: "auto",
      served: [qwen],
      topology: twoCores,
      running: [{ pid: 77, threads: undefined }],
      ownPid: undefined,
    });
    expect(r).toEqual({
      ok: true,
      warn: true,
      detail:
        "2 darkbloom daemons on this machine (this one and pid 77) would run 4 engine threads on 2 physical cores (sysfs): oversubscribed",
      fix: "give each daemon --threads 1 (2 cores / 2 daemons), or run fewer daemons",
    });
  });

  it("counts this data directory's own running daemon once, and explicit counts of others", () => {
    const running = [
      { pid: 10, threads: "auto" as const },
      { pid: 11, threads: 1 },
    ];
    // tiny: auto is 1 thread; with the other 1-thread daemon that is 2 threads on 2 cores.
    const r = threadsCheck({ configured: "auto", served: [tiny], topology: twoCores, running, ownPid: 10 });
    expect(r).toMatchObject({ warn: false });
    expect(r.detail).toBe("auto: 1 thread; 2 daemons, 2 threads in all on 2 physical cores (sysfs)");
    const three = threadsCheck({
      configured: 1,
      served: [tiny],
      topology: twoCores,
      running: [...running, { pid: 12, threads: 1 }],
      ownPid: 10,
    });
    expect(three.warn).toBe(true);
    expect(three.fix).toBe("run at most 2 daemons with --threads 1");
  });

  it("says when other daemons could not be listed", () => {
    const r = threadsCheck({
      configured: "auto",
      served: [tiny],
      topology: twoCores,
      running: undefined,
      ownPid: undefined,
    });
    expect(r.detail).toMatch(/other daemons not checked \(ps failed\)$/);
  });
});
