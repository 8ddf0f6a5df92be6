import { type CliIo, processIo as kitProcessIo } from "@darkbloom/cli-kit";

// The command line kit both CLIs share (@darkbloom/cli-kit), bound to this program's name.
export { CliFailure, type CliIo, ExitCode, UsageError } from "@darkbloom/cli-kit";

/** The program's name, which starts every error line. */
export const PROGRAM_NAME = "darkbloom";

/** The real process's io; a second SIGINT or SIGTERM while shutting down exits 130. */
export function processIo(): CliIo {
  return kitProcessIo(PROGRAM_NAME);
}
