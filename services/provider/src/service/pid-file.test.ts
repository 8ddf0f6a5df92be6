import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AlreadyRunningError, acquirePidFile, processAlive, readPidFile } from "./pid-file.js";

let dir: string;
let path: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-pid-"));
  path = join(dir, "darkbloom.pid");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A pid that no process has: a child that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
  await new Promise((resolve) => child.once("exit", resolve));
  return child.pid ?? 999_999;
}

describe("PID file", () => {
  it("creates the file with this process's pid and removes it on release", async () => {
    const pidFile = await acquirePidFile(path);
    expect(await readFile(path, "utf8")).toBe(`${process.pid}\n`);
    expect(await readPidFile(path)).toBe(process.pid);
    await pidFile.release();
    expect(await readPidFile(path)).toBeUndefined();
    expect(await readdir(dir)).toEqual([]); // no temporary files left behind
  });

  it("refuses to start while a live process holds it", async () => {
    const other = spawn(process.execPath, ["-e", "setTimeout(() => {}, 10000)"], { stdio: "ignore" });
    try {
      await writeFile(path, `${other.pid}\n`);
      const error = await acquirePidFile(path).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AlreadyRunningError);
      expect((error as AlreadyRunningError).pid).toBe(other.pid);
      expect((error as Error).message).toBe(
        `another darkbloom daemon is running (pid ${other.pid}, PID file ${path}); stop it first (darkbloom stop)`,
      );
      expect(await readPidFile(path)).toBe(other.pid); // untouched
    } finally {
      other.kill();
    }
  });

  it("replaces a stale PID file whose process is gone, and a garbage one", async () => {
    const stale = await deadPid();
    expect(processAlive(stale)).toBe(false);
    await writeFile(path, `${stale}\n`);
    const pidFile = await acquirePidFile(path);
    expect(await readPidFile(path)).toBe(process.pid);
    await pidFile.release();

    await writeFile(path, "not a pid\n");
    await acquirePidFile(path);
    expect(await readPidFile(path)).toBe(process.pid);
  });

  it("one of two concurrent starts wins", async () => {
    const alive = new Set([1001, 1002]);
    const results = await Promise.allSettled([
      acquirePidFile(path, { pid: 1001, isAlive: (p) => alive.has(p) }),
      acquirePidFile(path, { pid: 1002, isAlive: (p) => alive.has(p) }),
    ]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const rejected = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(rejected.reason).toBeInstanceOf(AlreadyRunningError);
  });

  it("release leaves a file that names another process alone", async () => {
    const pidFile = await acquirePidFile(path);
    await writeFile(path, "12345\n");
    await pidFile.release();
    pidFile.releaseSync();
    expect(await readPidFile(path)).toBe(12345);
  });
});
