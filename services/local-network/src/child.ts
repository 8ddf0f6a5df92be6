import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";

/** A child process of the local network whose output goes to a log file. */
export interface Child {
  name: string;
  process: ChildProcess;
  logFile: string;
  /** Resolves with the exit code (or signal name) when the process ends. */
  exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  stop(graceMs: number): Promise<void>;
}

/** Starts `node script args…` with stdout and stderr appended to `logFile`. */
export function startChild(
  name: string,
  script: string,
  args: string[],
  logFile: string,
  env: NodeJS.ProcessEnv = {},
): Child {
  const log = createWriteStream(logFile, { flags: "a" });
  const child = spawn(process.execPath, [script, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
    // Its own process group: a terminal's Ctrl-C reaches only the launcher, which stops the children
    // in order (providers drain before the coordinator, the coordinator before its database).
    detached: true,
  });
  // Should the launcher die without stopping it, the child still gets SIGTERM.
  const onExit = () => child.kill("SIGTERM");
  process.once("exit", onExit);
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => {
      process.off("exit", onExit);
      log.end();
      resolve(code ?? signal ?? "unknown");
    });
  });
  return {
    name,
    process: child,
    logFile,
    exited,
    stop: async (graceMs) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}
