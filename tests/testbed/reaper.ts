// The testbed's reaper: a small detached process that outlives the test process that started it.
// Should that process die without stopping its testbed (SIGKILL, an out-of-memory kill, a crash), its
// IPC channel closes, and the reaper kills every process the testbed registered: no coordinator,
// provider daemon or PostgreSQL is left running. A testbed that stops normally releases it first.

/** What the testbed tells its reaper. */
export type ReaperMessage =
  /** Kill this process group (a detached child: its PID is the group's) if the testbed dies. */
  | { kind: "group"; pid: number }
  /** Kill this process with `signal` (PostgreSQL's postmaster: SIGQUIT is its immediate shutdown). */
  | { kind: "process"; pid: number; signal: NodeJS.Signals }
  /** The testbed stopped everything itself: exit without killing anything. */
  | { kind: "release" };

const targets = new Map<number, { group: boolean; signal: NodeJS.Signals }>();
let released = false;

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

if (process.send) {
  process.on("message", (m: ReaperMessage) => {
    if (m.kind === "release") released = true;
    else if (m.kind === "group") targets.set(m.pid, { group: true, signal: "SIGKILL" });
    else targets.set(m.pid, { group: false, signal: m.signal });
  });
  process.on("disconnect", () => {
    if (!released) {
      for (const [pid, t] of targets) kill(t.group ? -pid : pid, t.signal);
    }
    process.exit(0);
  });
}
