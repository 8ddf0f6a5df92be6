/**
 * One container as a process tree, in the manner of a container runtime: the entrypoint runs in its own
 * process group (standing in for a PID namespace), stdout and stderr are captured, SIGTERM goes to the
 * main process only (as to PID 1), and when the main process ends the rest of its group is killed,
 * as when a PID namespace's init exits. Hooks (preStop) and exec probes run beside it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import os from "node:os";
import { httpGet } from "./probes.js";
import type { Container, LifecycleHandler } from "./types.js";

export interface ExitInfo {
  exitCode: number;
  signal?: number;
  reason: "Completed" | "Error" | "StartError";
  message?: string;
  startedAt: number;
  finishedAt: number;
}

const signalNumber = (signal: NodeJS.Signals): number => os.constants.signals[signal] ?? 9;

function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is already empty.
  }
}

export interface ProcessSpec {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  output: (chunk: string) => void;
}

/** A started container process; `exited` resolves once, with what the runtime reports. */
export class ContainerProcess {
  readonly containerID = `containerd://${randomBytes(32).toString("hex")}`;
  readonly startedAt = Date.now();
  readonly exited: Promise<ExitInfo>;
  private readonly child: ChildProcess;
  private done = false;
  private killTimer: NodeJS.Timeout | undefined;
  private killDeadline = Number.POSITIVE_INFINITY;

  constructor(spec: ProcessSpec) {
    const [file = "", ...args] = spec.argv;
    this.child = spawn(file, args, {
      cwd: spec.cwd,
      env: spec.env,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout?.setEncoding("utf8").on("data", spec.output);
    this.child.stderr?.setEncoding("utf8").on("data", spec.output);
    this.exited = new Promise<ExitInfo>((resolve) => {
      const finish = (info: Omit<ExitInfo, "startedAt" | "finishedAt">) => {
        if (this.done) return;
        this.done = true;
        clearTimeout(this.killTimer);
        // The main process is gone: so is everything it left behind in its group.
        killGroup(this.child.pid, "SIGKILL");
        resolve({ ...info, startedAt: this.startedAt, finishedAt: Date.now() });
      };
      this.child.on("error", (err) => {
        // containerd's wording for an entrypoint that cannot be executed.
        const message = `failed to create containerd task: failed to start container process: exec: "${file}": ${err.message}`;
        finish({ exitCode: 128, reason: "StartError", message });
      });
      this.child.on("exit", (code, signal) => {
        const exitCode = signal ? 128 + signalNumber(signal) : (code ?? 0);
        const info: Omit<ExitInfo, "startedAt" | "finishedAt"> = {
          exitCode,
          reason: exitCode === 0 ? "Completed" : "Error",
        };
        if (signal) info.signal = signalNumber(signal);
        finish(info);
      });
    });
  }

  get running(): boolean {
    return !this.done;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** SIGTERM to the main process, SIGKILL to the group after graceMs (shortened by a later call). */
  stop(graceMs: number): Promise<ExitInfo> {
    if (this.done) return this.exited;
    try {
      this.child.kill("SIGTERM");
    } catch {
      // Exited meanwhile.
    }
    const deadline = Date.now() + graceMs;
    if (deadline < this.killDeadline) {
      clearTimeout(this.killTimer);
      this.killDeadline = deadline;
      this.killTimer = setTimeout(() => killGroup(this.child.pid, "SIGKILL"), graceMs);
    }
    return this.exited;
  }

  kill(): Promise<ExitInfo> {
    killGroup(this.child.pid, "SIGKILL");
    return this.exited;
  }
}

/** Runs a command to its end (exec probes and hooks), killed at the timeout; resolves to the exit code. */
export function runCommand(spec: ProcessSpec, timeoutMs: number): Promise<number> {
  const proc = new ContainerProcess(spec);
  const timer = setTimeout(() => void proc.kill(), timeoutMs);
  return proc.exited.then((info) => {
    clearTimeout(timer);
    return info.exitCode;
  });
}

/** Runs a lifecycle hook (preStop): sleep, httpGet or exec; failures are logged, never fatal. */
export async function runHook(
  hook: LifecycleHandler,
  container: Container,
  podIP: string,
  execSpec: Omit<ProcessSpec, "argv">,
  timeoutMs: number,
): Promise<void> {
  if (hook.sleep) {
    await new Promise((resolve) =>
      setTimeout(resolve, Math.min(hook.sleep?.seconds ?? 0, timeoutMs / 1000) * 1000),
    );
  } else if (hook.httpGet) {
    await httpGet(hook.httpGet, podIP, container, timeoutMs);
  } else if (hook.exec?.command?.length) {
    await runCommand({ ...execSpec, argv: hook.exec.command }, timeoutMs);
  }
}
