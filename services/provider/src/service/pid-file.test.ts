import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import ts from "typescript";
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

  it("the lock names its owner: a live one refuses a start even without the PID file; a dead one's leftovers go", async () => {
    const alive = new Set([2001]);
    const isAlive = (p: number) => alive.has(p);
    const held = await acquirePidFile(path, { pid: 2001, isAlive });
    await rm(path); // the lock, not the PID file, decides
    const error = await acquirePidFile(path, { pid: 2002, isAlive }).catch((e: unknown) => e);
    expect((error as AlreadyRunningError).pid).toBe(2001);
    alive.delete(2001); // killed: its lock, and a staging directory of a start it never finished, remain
    await mkdir(`${path}.lock.2001-00ff.tmp`);
    const next = await acquirePidFile(path, { pid: 2002, isAlive });
    expect(await readPidFile(path)).toBe(2002);
    held.releaseSync(); // the dead owner's handle cannot release the new owner's lock
    expect(
      (await acquirePidFile(path, { pid: 2003, isAlive: () => true }).catch((e: unknown) => e)) as Error,
    ).toBeInstanceOf(AlreadyRunningError);
    await next.release();
    expect(await readdir(dir)).toEqual([]);
  });

  it("of daemons racing over a stale PID file and lock at once, exactly one runs (real processes)", async () => {
    // This module, as JavaScript, imported by separate Node processes: each its own pid, its own
    // libuv threads, racing on the real file system.
    const source = await readFile(new URL("./pid-file.ts", import.meta.url), "utf8");
    const js = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    await writeFile(join(dir, "pid-file.mjs"), js);
    await writeFile(join(dir, "contender.mjs"), CONTENDER);
    const dead = await deadPid();
    const ROUNDS = 16;
    const CONTENDERS = 8;
    const outcomes: string[][] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const roundDir = join(dir, `round-${round}`);
      await mkdir(roundDir);
      const pidPath = join(roundDir, "darkbloom.pid");
      // What a daemon killed with SIGKILL leaves: its PID file and its lock.
      await writeFile(pidPath, `${dead}\n`);
      await mkdir(`${pidPath}.lock`);
      await writeFile(join(`${pidPath}.lock`, `${dead}-0123abcd`), `${dead}\n`);
      outcomes.push(await race(join(dir, "contender.mjs"), pidPath, CONTENDERS));
    }
    for (const outcome of outcomes) {
      expect(
        outcome.filter((o) => o === "won"),
        outcome.join(", "),
      ).toHaveLength(1);
      expect(outcome.filter((o) => o === "lost AlreadyRunningError")).toHaveLength(CONTENDERS - 1);
    }
  }, 120_000);
});

/**
 * A contender: says it is ready, takes the start time from stdin, spins until then (so all start
 * within the same millisecond), tries the PID file, reports, and stays alive (the winner must, for
 * the others to see a live owner) until stdin closes.
 */
const CONTENDER = `
import { createInterface } from "node:readline";
import { acquirePidFile } from "./pid-file.mjs";
const lines = createInterface({ input: process.stdin });
process.stdout.write("ready\\n");
lines.once("line", async (startAt) => {
  while (Date.now() < Number(startAt)) {}
  try {
    await acquirePidFile(process.argv[2]);
    process.stdout.write("won\\n");
  } catch (error) {
    process.stdout.write("lost " + error.name + "\\n");
  }
});
lines.once("close", () => process.exit(0));
`;

async function race(script: string, pidPath: string, count: number): Promise<string[]> {
  const children: ChildProcessWithoutNullStreams[] = [];
  const reports: Promise<string>[] = [];
  const ready: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const child = spawn(process.execPath, [script, pidPath]);
    children.push(child);
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    ready.push(lines.next().then(() => undefined));
    reports.push(ready[i]!.then(() => lines.next()).then((r) => String(r.value)));
  }
  try {
    await Promise.all(ready);
    const startAt = Date.now() + 100;
    for (const child of children) child.stdin.write(`${startAt}\n`);
    return await Promise.all(reports);
  } finally {
    await Promise.all(
      children.map(
        (child) =>
          new Promise((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve(undefined);
            child.once("exit", resolve);
            child.stdin.end();
          }),
      ),
    );
  }
}
