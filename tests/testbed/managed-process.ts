import { readFile } from "node:fs/promises";
import { type Child, startChild } from "@darkbloom/local-network";

/** How long a SIGTERM may take before the process is killed. */
const STOP_GRACE_MS = 15_000;

/**
 * One of the testbed's processes (a coordinator or a provider daemon): a Node script run with fixed
 * arguments, its output appended to a log file, that can be killed, paused and started again.
 */
export class ManagedProcess {
  private child: Child | undefined;
  private starts = 0;
  /** Told each new process's PID (the testbed registers it with its reaper). */
  onStarted: ((pid: number) => void) | undefined;

  constructor(
    readonly name: string,
    private readonly script: string,
    private readonly args: () => string[],
    readonly logFile: string,
  ) {}

  /** The running process's PID; undefined when it is not running. */
  get pid(): number | undefined {
    return this.running ? this.child?.process.pid : undefined;
  }

  get running(): boolean {
    const p = this.child?.process;
    return p !== undefined && p.exitCode === null && p.signalCode === null;
  }

  /** Resolves with the exit code or signal name when the current process ends. */
  get exited(): Promise<number | string> {
    if (!this.child) throw new Error(`${this.name} was never started`);
    return this.child.exited;
  }

  /** How many times the process was started. */
  get startCount(): number {
    return this.starts;
  }

  /** Starts the process (it must not be running). */
  start(): void {
    if (this.running) throw new Error(`${this.name} is already running (PID ${this.pid})`);
    this.starts++;
    this.child = startChild(this.name, this.script, this.args(), this.logFile);
    if (this.child.process.pid !== undefined) this.onStarted?.(this.child.process.pid);
  }

  /** Sends `signal` and, unless it is SIGSTOP or SIGCONT, waits for the process to end. */
  async kill(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    child.process.kill(signal);
    if (signal !== "SIGSTOP" && signal !== "SIGCONT") await child.exited;
  }

  /** Freezes the process: it keeps its sockets open but does nothing (a stalled machine). */
  pause(): Promise<void> {
    return this.kill("SIGSTOP");
  }

  resume(): Promise<void> {
    return this.kill("SIGCONT");
  }

  /** SIGTERM (the graceful path), SIGKILL after a grace period; a paused process is resumed first. */
  async stop(graceMs = STOP_GRACE_MS): Promise<void> {
    if (!this.child || !this.running) return;
    this.child.process.kill("SIGCONT");
    await this.child.stop(graceMs);
  }

  /** The last `lines` lines of the log (for failure messages). */
  async logTail(lines = 30): Promise<string> {
    const text = await readFile(this.logFile, "utf8").catch(() => "");
    return text.trimEnd().split("\n").slice(-lines).join("\n");
  }
}
