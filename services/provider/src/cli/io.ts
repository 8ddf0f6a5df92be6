/** Where a CLI run reads its environment and writes its output; injectable for in-process tests. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  env: Readonly<Record<string, string | undefined>>;
  /** Whether stderr is a terminal (progress bars are drawn only then). */
  stderrIsTty: boolean;
  /** Resolves with the signal's name when the process is asked to stop (SIGINT or SIGTERM). */
  shutdownSignal(): Promise<string>;
}

/** The program's name, which starts every error line. */
export const PROGRAM_NAME = "darkbloom";

/** Exit statuses, after sysexits(3). */
export const ExitCode = {
  ok: 0,
  /** The command ran and failed (a doctor check failed, another daemon runs, a download failed). */
  failure: 1,
  /** The command line or the configuration is wrong. */
  usage: 64,
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
    readonly exitCode: number = ExitCode.failure,
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
    stderrIsTty: process.stderr.isTTY === true,
    shutdownSignal: () =>
      new Promise((resolve) => {
        const onSignal = (signal: NodeJS.Signals) => {
          process.off("SIGINT", onSignal);
          process.off("SIGTERM", onSignal);
          // A second signal while shutting down means "now".
          const force = (again: NodeJS.Signals) => {
            process.stderr.write(`${PROGRAM_NAME}: ${again} again, exiting without waiting\n`);
            process.exit(ExitCode.failure);
          };
          process.once("SIGINT", force);
          process.once("SIGTERM", force);
          resolve(signal);
        };
        process.on("SIGINT", onSignal);
        process.on("SIGTERM", onSignal);
      }),
  };
}
