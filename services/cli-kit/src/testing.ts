import type { CliIo } from "./io.js";

/** An in-memory CliIo for tests: captured output and a shutdown signal the test sends. */
export interface TestIo {
  io: CliIo;
  stdout(): string;
  stderr(): string;
  /** Resolves every shutdownSignal() waiter with `signal`. */
  signal(signal?: string): void;
  /** How many times the command asked for the shutdown signal. */
  signalsAwaited(): number;
}

export function testIo(env: Record<string, string | undefined> = {}): TestIo {
  let out = "";
  let err = "";
  let awaited = 0;
  let fire!: (signal: string) => void;
  const signalled = new Promise<string>((resolve) => {
    fire = resolve;
  });
  return {
    io: {
      stdout: (text) => {
        out += text;
      },
      stderr: (text) => {
        err += text;
      },
      env,
      stderrIsTty: false,
      shutdownSignal: () => {
        awaited++;
        return signalled;
      },
    },
    stdout: () => out,
    stderr: () => err,
    signal: (signal = "SIGTERM") => fire(signal),
    signalsAwaited: () => awaited,
  };
}
