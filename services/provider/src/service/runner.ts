import { execFile } from "node:child_process";

export interface CommandResult {
  /** Exit status; 127 when the command could not be started. */
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs external commands (launchctl, systemctl); injectable so tests see the exact calls. */
export interface CommandRunner {
  run(command: string, args: readonly string[]): Promise<CommandResult>;
}

/** The real runner: execFile without a shell; a non-zero exit is a result, not an exception. */
export const processRunner: CommandRunner = {
  run: (command, args) =>
    new Promise((resolve) => {
      execFile(command, [...args], { encoding: "utf8", timeout: 60_000 }, (error, stdout, stderr) => {
        if (!error) return resolve({ code: 0, stdout, stderr });
        const code = (error as NodeJS.ErrnoException).code;
        if (typeof code === "string") {
          // ENOENT and friends: the command itself is missing.
          return resolve({ code: 127, stdout, stderr: stderr || `${command}: ${error.message}` });
        }
        resolve({ code: typeof error.code === "number" ? error.code : 1, stdout, stderr });
      });
    }),
};
