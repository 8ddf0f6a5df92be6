/** Where a CLI run reads its environment and writes its output; injectable for in-process tests. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  env: Readonly<Record<string, string | undefined>>;
  /** Resolves with the signal's name when the process is asked to stop (SIGINT or SIGTERM). */
  shutdownSignal(): Promise<string>;
}

/** The program's name, which starts every error line. */
export const PROGRAM_NAME = "darkbloom-coordinator";

/** Exit statuses, after sysexits(3). */
export const ExitCode = {
  ok: 0,
  /** The command ran and failed, e.g. the coordinator refused the request. */
  failure: 1,
  /** The command line was wrong. */
  usage: 64,
  /** The coordinator could not be reached. */
  unavailable: 69,
} as const;

/** A command line the program cannot act on: exit status 64. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** A failure already described to the user: exit with `exitCode`. */
export class CliFailure extends Error {
  override readonly name = "CliFailure";

  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

/** The real process: its streams, environment and termination signals. */
export function processIo(): CliIo {
  return {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    env: process.env,
    shutdownSignal: () =>
      new Promise((resolve) => {
        const onSignal = (signal: NodeJS.Signals) => {
          // A second signal while shutting down means "now".
          const force = (again: NodeJS.Signals) => {
            process.stderr.write(`${PROGRAM_NAME}: ${again} again, exiting without waiting\n`);
            process.exit(ExitCode.failure);
          };
          process.once("SIGINT", force);
          process.once("SIGTERM", force);
          resolve(signal);
        };
        process.once("SIGINT", onSignal);
        process.once("SIGTERM", onSignal);
      }),
  };
}
