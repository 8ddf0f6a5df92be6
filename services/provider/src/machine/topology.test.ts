import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  darwinTopology,
  detectTopology,
  type FileReader,
  linuxTopology,
  parseCpuList,
  parseCpuMax,
} from "./topology.js";

/** A sysfs/procfs tree in memory: path → content. */
function tree(files: Record<string, string>): FileReader {
  return async (path) => files[path];
}

/** cpuN → [package, core]: the topology files of each CPU under /sys/devices/system/cpu. */
function cpus(layout: [number, number][], online = `0-${layout.length - 1}`): Record<string, string> {
  const files: Record<string, string> = { "/sys/devices/system/cpu/online": `${online}\n` };
  for (const [i, [pkg, core]] of layout.entries()) {
    files[`/sys/devices/system/cpu/cpu${i}/topology/physical_package_id`] = `${pkg}\n`;
    files[`/sys/devices/system/cpu/cpu${i}/topology/core_id`] = `${core}\n`;
  }
  return files;
}

describe("parsing", () => {
  it("reads Linux CPU lists", () => {
    expect(parseCpuList("0-3,8,10-11\n")).toEqual([0, 1, 2, 3, 8, 10, 11]);
    expect(parseCpuList("5")).toEqual([5]);
    expect(parseCpuList("")).toEqual([]);
    expect(parseCpuList("3-1")).toBeUndefined();
    expect(parseCpuList("a-b")).toBeUndefined();
  });

  it("reads cgroup v2 cpu.max", () => {
    expect(parseCpuMax("max 100000\n")).toBeUndefined();
    expect(parseCpuMax("200000 100000\n")).toBe(2);
    expect(parseCpuMax("150000 100000")).toBe(2); // 1.5 CPUs still runs two threads at once
    expect(parseCpuMax("50000 100000")).toBe(1);
    expect(parseCpuMax("garbage")).toBeUndefined();
  });
});

describe("linuxTopology", () => {
  it("counts SMT siblings once (4 cores, 8 hardware threads)", async () => {
    // Intel numbering: cpu0-3 are the first thread of cores 0-3, cpu4-7 their siblings.
    const layout: [number, number][] = [0, 1, 2, 3, 0, 1, 2, 3].map((core) => [0, core]);
    expect(await linuxTopology(tree(cpus(layout)))).toEqual({
      logicalCpus: 8,
      physicalCores: 4,
      source: "4 physical cores of 8 logical CPUs, from sysfs",
    });
  });

  it("tells cores of different sockets apart (same core_id on two packages)", async () => {
    const layout: [number, number][] = [
      [0, 0],
      [0, 1],
      [1, 0],
      [1, 1],
    ];
    expect((await linuxTopology(tree(cpus(layout))))?.physicalCores).toBe(4);
  });

  it("counts the project's 2-vCPU VM as 2 cores", async () => {
    const layout: [number, number][] = [
      [0, 0],
      [0, 1],
    ];
    expect((await linuxTopology(tree(cpus(layout))))?.physicalCores).toBe(2);
  });

  it("only counts CPUs that are online and allowed to this process", async () => {
    const layout: [number, number][] = [0, 1, 2, 3, 0, 1, 2, 3].map((core) => [0, core]);
    const files = {
      ...cpus(layout, "0-7"),
      "/proc/self/status": "Name:\tnode\nCpus_allowed:\t11\nCpus_allowed_list:\t0,4\n",
    };
    // cpu0 and cpu4 are the two threads of core 0.
    expect(await linuxTopology(tree(files))).toEqual({
      logicalCpus: 2,
      physicalCores: 1,
      source: "1 physical core of 2 logical CPUs, from sysfs",
    });
    const offline = cpus(layout, "0-2");
    expect((await linuxTopology(tree(offline)))?.physicalCores).toBe(3);
  });

  it("falls back to thread_siblings_list when core ids are missing", async () => {
    const files: Record<string, string> = { "/sys/devices/system/cpu/online": "0-3" };
    for (const [i, siblings] of ["0,2", "1,3", "0,2", "1,3"].entries())
      files[`/sys/devices/system/cpu/cpu${i}/topology/thread_siblings_list`] = siblings;
    expect(await linuxTopology(tree(files))).toEqual({
      logicalCpus: 4,
      physicalCores: 2,
      source: "2 physical cores of 4 logical CPUs, from thread_siblings_list",
    });
  });

  it("caps the cores at a cgroup CPU quota", async () => {
    const layout: [number, number][] = Array.from({ length: 16 }, (_, core) => [0, core]);
    const files = { ...cpus(layout), "/sys/fs/cgroup/cpu.max": "300000 100000\n" };
    expect(await linuxTopology(tree(files))).toEqual({
      logicalCpus: 16,
      physicalCores: 3,
      source: "16 physical cores of 16 logical CPUs, from sysfs, cgroup quota 3",
    });
  });

  it("says nothing without sysfs", async () => {
    expect(await linuxTopology(tree({}))).toBeUndefined();
  });
});

describe("darwinTopology", () => {
  it("counts the performance cores of Apple silicon", () => {
    // M2 Pro: 8 performance + 4 efficiency cores, no SMT.
    expect(
      darwinTopology(
        { "hw.perflevel0.physicalcpu": "8\n", "hw.physicalcpu": "12\n", "hw.logicalcpu": "12\n" },
        12,
      ),
    ).toEqual({ logicalCpus: 12, physicalCores: 8, source: "8 performance cores (of 12), sysctl" });
  });

  it("counts physical cores on an Intel Mac (no perflevels, SMT)", () => {
    expect(darwinTopology({ "hw.physicalcpu": "6", "hw.logicalcpu": "12" }, 12)).toEqual({
      logicalCpus: 12,
      physicalCores: 6,
      source: "6 physical cores, sysctl",
    });
  });

  it("says nothing when sysctl does not answer", () => {
    expect(darwinTopology({}, 4)).toBeUndefined();
    expect(darwinTopology({ "hw.physicalcpu": "zero" }, 4)).toBeUndefined();
  });
});

describe("detectTopology", () => {
  let root: string | undefined;
  afterEach(async () => {
    if (root) await rm(root, { recursive: true, force: true });
    root = undefined;
  });

  it("reads a sysfs tree on disk under a given root", async () => {
    root = await mkdtemp(join(tmpdir(), "topology-"));
    for (const [path, text] of Object.entries(
      cpus([0, 1, 0, 1].map((core): [number, number] => [0, core])),
    )) {
      await mkdir(dirname(join(root, path)), { recursive: true });
      await writeFile(join(root, path), text);
    }
    const found = await detectTopology({ platform: "linux", root, availableParallelism: () => 4 });
    expect(found).toMatchObject({ logicalCpus: 4, physicalCores: 2 });
  });

  it("asks sysctl on macOS and falls back to availableParallelism elsewhere", async () => {
    const asked: string[] = [];
    const mac = await detectTopology({
      platform: "darwin",
      availableParallelism: () => 10,
      sysctl: async (name) => {
        asked.push(name);
        return name === "hw.perflevel0.physicalcpu" ? "4" : name === "hw.physicalcpu" ? "10" : "10";
      },
    });
    expect(mac.physicalCores).toBe(4);
    expect(asked).toContain("hw.perflevel0.physicalcpu");
    const windows = await detectTopology({ platform: "win32", availableParallelism: () => 6 });
    expect(windows).toEqual({
      logicalCpus: 6,
      physicalCores: 6,
      source: "6 CPUs (availableParallelism; no topology)",
    });
    const bareLinux = await detectTopology({
      platform: "linux",
      read: tree({}),
      availableParallelism: () => 3,
    });
    expect(bareLinux.physicalCores).toBe(3);
  });
});
