// Request/reply over the IPC channel of a forked child process: the drills run the coordinator and the
// simulated providers in processes of their own and drive them with these messages.
import { type ChildProcess, fork } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

interface Envelope {
  id: number;
  body?: unknown;
  error?: string;
}

/**
 * The compiled path of a child script of this directory. From dist it is a sibling; under vitest the
 * library runs from source, and the children run from tests/dist (`npm test` builds first).
 */
export function childScript(name: string): string {
  const here = fileURLToPath(import.meta.url);
  const path = here.endsWith(".ts")
    ? join(dirname(here), "../../dist/bench/scale", `${name}.js`)
    : join(dirname(here), `${name}.js`);
  if (!existsSync(path)) throw new Error(`${path} is missing: build with \`npx tsc -b\` first`);
  return path;
}

/** The parent's end: forks the script, waits for its first message, then sends requests. */
export class ChildLink<Request, Reply, Ready> {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private exited: Error | undefined;

  private constructor(
    readonly child: ChildProcess,
    readonly ready: Ready,
  ) {
    child.on("message", (m) => {
      const envelope = m as Envelope;
      const waiter = this.pending.get(envelope.id);
      if (!waiter) return;
      this.pending.delete(envelope.id);
      if (envelope.error !== undefined) waiter.reject(new Error(envelope.error));
      else waiter.resolve(envelope.body as Reply);
    });
    child.once("exit", (code, signal) => {
      this.exited = new Error(`${child.spawnargs.join(" ")} exited (${signal ?? code})`);
      for (const waiter of this.pending.values()) waiter.reject(this.exited);
      this.pending.clear();
    });
  }

  /** Forks `script` with `args`; resolves with the link once the child sent its ready message. */
  static async start<Request, Reply, Ready>(
    script: string,
    args: string[],
    options: { execArgv?: string[]; timeoutMs?: number } = {},
  ): Promise<ChildLink<Request, Reply, Ready>> {
    const child = fork(script, args, {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      execArgv: options.execArgv ?? [],
      serialization: "advanced",
    });
    const ready = await new Promise<Ready>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`${script} did not start within ${options.timeoutMs ?? 60_000} ms`));
      }, options.timeoutMs ?? 60_000);
      child.once("message", (m) => {
        clearTimeout(timer);
        resolve((m as { body: Ready }).body);
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`${script} exited with ${code} before it was ready`));
      });
    });
    return new ChildLink<Request, Reply, Ready>(child, ready);
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  request(body: Request, timeoutMs = 600_000): Promise<Reply> {
    if (this.exited) return Promise.reject(this.exited);
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no reply from ${this.child.spawnargs.join(" ")} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.child.send({ id, body } satisfies Envelope);
    });
  }

  /** Sends `body` (the child's stop request) and waits for the exit; SIGKILL after `graceMs`. */
  async stop(body: Request, graceMs = 15_000): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    this.request(body, graceMs).catch(() => undefined);
    await exited;
    clearTimeout(timer);
  }

  /** Kills the child at once (cleanup after a failure). */
  kill(): void {
    if (!this.exited) this.child.kill("SIGKILL");
  }
}

/**
 * The child's end: announces `ready`, then answers each request with `handle`'s result (or its
 * error's message). The handler may exit the process after replying (stop).
 */
export function serveParent<Request, Reply>(
  ready: unknown,
  handle: (request: Request) => Promise<Reply>,
): void {
  const send = (m: unknown) => process.send?.(m);
  process.on("message", (m) => {
    const { id, body } = m as Envelope;
    handle(body as Request).then(
      (reply) => send({ id, body: reply } satisfies Envelope),
      (e: unknown) => send({ id, error: e instanceof Error ? e.message : String(e) } satisfies Envelope),
    );
  });
  // Orphaned (the parent died): leave rather than hold thousands of connections open.
  process.on("disconnect", () => process.exit(0));
  send({ body: ready });
}
