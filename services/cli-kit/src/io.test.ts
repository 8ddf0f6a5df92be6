import { afterEach, describe, expect, it, vi } from "vitest";
import { ExitCode, processIo } from "./io.js";

describe("processIo", () => {
  // The test runner's own signal listeners stay; only those the tests added are removed.
  const before = {
    SIGINT: process.listeners("SIGINT"),
    SIGTERM: process.listeners("SIGTERM"),
  };
  afterEach(() => {
    vi.restoreAllMocks();
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      for (const l of process.listeners(signal)) if (!before[signal].includes(l)) process.off(signal, l);
    }
  });

  it("resolves on the first SIGINT or SIGTERM and exits 130 with one line on the second", async () => {
    const exit = vi.spyOn(process, "exit").mockImplementation((() => undefined) as never);
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    const io = processIo("prog");
    const first = io.shutdownSignal();
    const second = io.shutdownSignal();
    // Signals are delivered to listeners; emitting one runs them as the real signal would.
    process.emit("SIGTERM", "SIGTERM");
    expect(await first).toBe("SIGTERM");
    expect(await second).toBe("SIGTERM");
    expect(exit).not.toHaveBeenCalled();
    process.emit("SIGINT", "SIGINT");
    expect(stderr).toHaveBeenCalledWith("prog: SIGINT again, exiting without waiting\n");
    expect(exit).toHaveBeenCalledWith(ExitCode.interrupted);
    expect(ExitCode.interrupted).toBe(130);
  });

  it("leaves no listener behind for the signal that did not come", async () => {
    vi.spyOn(process, "exit").mockImplementation((() => undefined) as never);
    vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    const count = process.listenerCount("SIGTERM");
    const waiting = processIo("prog").shutdownSignal();
    process.emit("SIGINT", "SIGINT");
    expect(await waiting).toBe("SIGINT");
    // Only the "second signal" handler is left on SIGTERM, not the first-signal one.
    expect(process.listenerCount("SIGTERM")).toBe(count + 1);
  });
});
