import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { DataDirLayout, pidFileOf, readPidFile } from "@darkbloom/provider";
import { ManagedProcess } from "./managed-process.js";
import type { TcpTap } from "./tcp-tap.js";

/** A provider daemon of the testbed (`darkbloom serve`), with its own data directory and PID file. */
export class TestbedProvider extends ManagedProcess {
  constructor(
    readonly index: number,
    /** The synthesized models it serves. */
    readonly models: readonly string[],
    readonly dataDir: string,
    /** The relay its connection goes through, when the testbed was asked to record its bytes. */
    readonly tap: TcpTap | undefined,
    script: string,
    args: () => string[],
    logFile: string,
  ) {
    super(`provider-${index}`, script, args, logFile);
  }

  /** The PID file the daemon writes and removes. */
  get pidFile(): string {
    return pidFileOf(this.dataDir);
  }

  /** The PID recorded in the daemon's PID file; undefined when there is none. */
  pidFromFile(): Promise<number | undefined> {
    return readPidFile(this.pidFile);
  }

  /** The installation's machine id (written by the daemon on its first start). */
  machineId(): Promise<string> {
    return readFile(join(this.dataDir, DataDirLayout.machineId), "utf8").then((s) => s.trim());
  }
}
