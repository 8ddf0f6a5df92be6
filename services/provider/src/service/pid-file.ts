import { randomBytes } from "node:crypto";
import { readFileSync, rmdirSync, unlinkSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, rmdir, unlink, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** Another daemon holds the PID file and its process is alive. */
export class AlreadyRunningError extends Error {
  override readonly name = "AlreadyRunningError";

  constructor(
    readonly pid: number,
    readonly path: string,
  ) {
    super(
      `another darkbloom daemon is running (pid ${pid}, PID file ${path}); stop it first (darkbloom stop)`,
    );
  }
}

export interface PidFile {
  readonly path: string;
  readonly pid: number;
  /** Removes the file if it still names this process, and gives up the lock. */
  release(): Promise<void>;
  /** The same, synchronously (for exit handlers). */
  releaseSync(): void;
}

export interface PidFileOptions {
  pid?: number;
  /** Whether a process exists (default: signal 0). */
  isAlive?: (pid: number) => boolean;
}

/** Whether a process with this pid exists (EPERM: it exists but belongs to someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The pid in a PID file, or undefined when there is none or it holds no pid. */
export async function readPidFile(path: string): Promise<number | undefined> {
  try {
    return parsePid(await readFile(path, "utf8"));
  } catch {
    return undefined;
  }
}

/** How many times a contender looks again after clearing a dead owner's lock. */
const ATTEMPTS = 10;

/**
 * Makes this process the single daemon of a data directory.
 *
 * The lock is the directory `<path>.lock`, holding one entry `<pid>-<nonce>` that names its owner. A
 * contender prepares such a directory aside and renames it onto `<path>.lock`: rename(2) replaces a
 * missing or empty directory atomically and fails on a non-empty one, so of any number of contenders
 * exactly one gets it. A lock whose owner is dead (a daemon killed with SIGKILL) is cleared by
 * removing its entry by name: an entry name is unique to the process that made it, so the removal
 * can never take away a newer owner's entry, however the contenders interleave. (Removing a stale
 * `<path>` by name, as before, could delete a file another contender had just created, and let
 * two daemons start.)
 *
 * Holding the lock, the process writes its pid to `<path>` (read by `status`, the testbed and the
 * drills). A `<path>` naming another live process (a daemon of an earlier version, which knew no
 * lock directory) is an AlreadyRunningError too.
 */
export async function acquirePidFile(path: string, options: PidFileOptions = {}): Promise<PidFile> {
  const pid = options.pid ?? process.pid;
  const isAlive = options.isAlive ?? processAlive;
  const lockDir = `${path}.lock`;
  const entry = `${pid}-${randomBytes(8).toString("hex")}`;
  const staging = `${lockDir}.${entry}.tmp`;
  await removeDeadLeftovers(path, isAlive);
  await mkdir(staging, { mode: 0o755 });
  try {
    await writeFile(join(staging, entry), `${pid}\n`, { flag: "wx", mode: 0o644 });
    await takeLock(staging, lockDir, path, pid, isAlive);
  } finally {
    // Gone once renamed into place; left over only when the lock was refused.
    await rm(staging, { recursive: true, force: true });
  }
  const lock = handle(path, lockDir, entry, pid);
  try {
    const recorded = await readPidFile(path);
    if (recorded !== undefined && recorded !== pid && isAlive(recorded)) {
      throw new AlreadyRunningError(recorded, path);
    }
    const temp = `${path}.${entry}.tmp`;
    await writeFile(temp, `${pid}\n`, { mode: 0o644 });
    await rename(temp, path);
  } catch (error) {
    await lock.releaseLock();
    throw error;
  }
  return lock;
}

async function takeLock(
  staging: string,
  lockDir: string,
  path: string,
  pid: number,
  isAlive: (pid: number) => boolean,
): Promise<void> {
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    try {
      await rename(staging, lockDir);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "ENOTEMPTY" && code !== "EEXIST") throw error;
    }
    const entries = await readdir(lockDir).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return [];
      throw error;
    });
    for (const name of entries) {
      const owner = parseEntry(name);
      // An entry with our own pid is a dead daemon's whose pid this process now has (after a reboot).
      if (owner !== undefined && owner !== pid && isAlive(owner)) throw new AlreadyRunningError(owner, path);
    }
    for (const name of entries) {
      await unlink(join(lockDir, name)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== "ENOENT") throw error;
      });
    }
  }
  throw new Error(`could not take the PID file lock ${lockDir}`);
}

/** Staging directories and temporary files that a process killed mid-start left behind. */
async function removeDeadLeftovers(path: string, isAlive: (pid: number) => boolean): Promise<void> {
  const prefix = `${basename(path)}.`;
  const names = await readdir(dirname(path)).catch(() => [] as string[]);
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith(".tmp")) continue;
    const match = /^(?:lock\.)?(\d+)-[0-9a-f]+\.tmp$/.exec(name.slice(prefix.length));
    const owner = match ? Number(match[1]) : undefined;
    if (owner !== undefined && !isAlive(owner)) {
      await rm(join(dirname(path), name), { recursive: true, force: true });
    }
  }
}

function handle(
  path: string,
  lockDir: string,
  entry: string,
  pid: number,
): PidFile & { releaseLock(): Promise<void> } {
  const ours = (text: string | undefined) => text !== undefined && parsePid(text) === pid;
  const mine = join(lockDir, entry);
  // Our entry goes first; rmdir then removes the directory only if it is empty, so a lock another
  // process has meanwhile renamed into place (not empty) is left alone.
  const releaseLock = async () => {
    await unlink(mine).catch(() => undefined);
    await rmdir(lockDir).catch(() => undefined);
  };
  return {
    path,
    pid,
    releaseLock,
    release: async () => {
      if (ours(await readFile(path, "utf8").catch(() => undefined)))
        await unlink(path).catch(() => undefined);
      await releaseLock();
    },
    releaseSync: () => {
      try {
        if (ours(readFileSync(path, "utf8"))) unlinkSync(path);
      } catch {
        // already gone
      }
      try {
        unlinkSync(mine);
        rmdirSync(lockDir);
      } catch {
        // already released, or another owner's lock now
      }
    },
  };
}

function parseEntry(name: string): number | undefined {
  const match = /^(\d{1,10})-[0-9a-f]+$/.exec(name);
  return match ? parsePid(match[1]!) : undefined;
}

function parsePid(text: string): number | undefined {
  const trimmed = text.trim();
  if (!/^\d{1,10}$/.test(trimmed)) return undefined;
  const pid = Number(trimmed);
  return pid > 0 ? pid : undefined;
}
