/** Where a CLI run reads its environment and writes its output; injectable for in-process tests. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  env: Readonly<Record<string, string | undefined>>;
  /** Whether stderr is a terminal (progress bars are drawn only then). */
  stderrIsTty: boolean;
  /**
   * Resolves with the signal's name when the process is asked to stop (SIGINT or SIGTERM): the
   * command stops in order and returns. A second signal while it stops exits at once (see processIo).
   */
  shutdownSignal(): Promise<string>;
}

/** Exit statuses, after sysexits(3) and the shells' 128 + signal number. */
export const ExitCode = {
  ok: 0,
  /** The command ran and failed (a check failed, the coordinator refused the request, …). */
  failure: 1,
  /** The command line or the configuration is wrong. */
  usage: 64,
  /** A service the command needs could not be reached (EX_UNAVAILABLE). */
  unavailable: 69,
  /** Stopped by a second SIGINT or SIGTERM without finishing its shutdown (128 + SIGINT). */
  interrupted: 130,
} as const;

/** A command line the program cannot act on: exit status 64. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** A failure already described to the user: exit with `exitCode` (its message, if any, is printed). */
export class CliFailure extends Error {
  override readonly name = "CliFailure";

  constructor(
    message: string,
    readonly exitCode: number = ExitCode.failure,
  ) {
    super(message);
  }
}

/**
 * The real process: its streams, environment and termination signals. The first SIGINT or SIGTERM
 * resolves every pending shutdownSignal() (the command shuts down in order); a second one, while it
 * does, means "now": one line on stderr and exit 130.
 */
export function processIo(programName: string): CliIo {
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
          const force = (again: NodeJS.Signals) => {
            process.stderr.write(`${programName}: ${again} again, exiting without waiting\n`);
            process.exit(ExitCode.interrupted);
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
