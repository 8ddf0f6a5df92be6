import { readFileSync, unlinkSync } from "node:fs";
import { link, readFile, unlink, writeFile } from "node:fs/promises";

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
  /** Removes the file if it still names this process. */
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

/**
 * Makes this process the single daemon of a data directory. The PID file is created atomically
 * (written aside, then hard-linked into place, which fails if it exists); a file naming a process
 * that is gone is stale and replaced; one naming a live process is an AlreadyRunningError.
 */
export async function acquirePidFile(path: string, options: PidFileOptions = {}): Promise<PidFile> {
  const pid = options.pid ?? process.pid;
  const isAlive = options.isAlive ?? processAlive;
  const temp = `${path}.${pid}.${Date.now()}.tmp`;
  await writeFile(temp, `${pid}\n`, { mode: 0o644 });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        await link(temp, path);
        return handle(path, pid);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      }
      const text = await readFile(path, "utf8").catch(() => undefined);
      if (text === undefined) continue; // removed meanwhile: try again
      const holder = parsePid(text);
      if (holder === pid) return handle(path, pid);
      if (holder !== undefined && isAlive(holder)) throw new AlreadyRunningError(holder, path);
      // Stale (its process is gone) or garbage: remove it unless someone replaced it meanwhile.
      const again = await readFile(path, "utf8").catch(() => undefined);
      if (again === text) await unlink(path).catch(() => undefined);
    }
    throw new Error(`could not create the PID file ${path}`);
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

function handle(path: string, pid: number): PidFile {
  const ours = (text: string | undefined) => text !== undefined && parsePid(text) === pid;
  return {
    path,
    pid,
    release: async () => {
      if (ours(await readFile(path, "utf8").catch(() => undefined)))
        await unlink(path).catch(() => undefined);
    },
    releaseSync: () => {
      try {
        if (ours(readFileSync(path, "utf8"))) unlinkSync(path);
      } catch {
        // already gone
      }
    },
  };
}

function parsePid(text: string): number | undefined {
  const trimmed = text.trim();
  if (!/^\d{1,10}$/.test(trimmed)) return undefined;
  const pid = Number(trimmed);
  return pid > 0 ? pid : undefined;
}
