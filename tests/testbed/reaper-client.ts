import { type ChildProcess, fork } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ReaperMessage } from "./reaper.js";

/**
 * The compiled reaper script. From tests/dist it is a sibling; under vitest the testbed runs from
 * source, and the reaper from tests/dist (`npm test` builds first).
 */
function reaperScript(): string {
  const here = fileURLToPath(import.meta.url);
  return here.endsWith(".ts")
    ? join(dirname(here), "../dist/testbed/reaper.js")
    : join(dirname(here), "reaper.js");
}

/** The test process's side of the reaper (see reaper.ts). */
export class Reaper {
  private constructor(private readonly child: ChildProcess) {}

  /** Starts a reaper; undefined (with the testbed working without one) when it was not built. */
  static start(): Reaper | undefined {
    const script = reaperScript();
    if (!existsSync(script)) return undefined;
    const child = fork(script, [], { detached: true, stdio: ["ignore", "ignore", "ignore", "ipc"] });
    // Neither the reaper nor its channel may keep the test process alive.
    child.unref();
    child.channel?.unref();
    return new Reaper(child);
  }

  /** Kills this process group if the test process dies first. */
  watchGroup(pid: number): void {
    this.send({ kind: "group", pid });
  }

  /** Kills this process with `signal` if the test process dies first. */
  watchProcess(pid: number, signal: NodeJS.Signals): void {
    this.send({ kind: "process", pid, signal });
  }

  /** Everything was stopped: the reaper exits without killing anything. */
  release(): void {
    this.send({ kind: "release" });
    if (this.child.connected) this.child.disconnect();
  }

  private send(m: ReaperMessage): void {
    if (this.child.connected) this.child.send(m);
  }
}
