import { createRequire } from "node:module";
import { Command, CommanderError } from "commander";
import { addAdminCommands } from "./admin.js";
import { asCommandGroup } from "./command-group.js";
import { CliFailure, type CliIo, ExitCode, PROGRAM_NAME, UsageError } from "./io.js";
import { addMigrateCommand } from "./migrate.js";
import { addServeCommand } from "./serve.js";

const { version } = createRequire(import.meta.url)("../../package.json") as { version: string };

/**
 * The `darkbloom-coordinator` command line. Commander never exits the process: usage errors throw
 * CommanderError (see runCli) and every message goes through `io`.
 */
export function buildProgram(io: CliIo): Command {
  const program = new Command(PROGRAM_NAME)
    .description("Darkbloom coordinator: OpenAI-compatible API, provider routing and the admin API")
    .version(version)
    .enablePositionalOptions()
    .exitOverride()
    .configureHelp({ subcommandTerm: (command) => `${command.name()} ${command.usage()}` })
    .configureOutput({
      writeOut: (text) => io.stdout(text),
      writeErr: (text) => io.stderr(text),
      outputError: (text, write) => write(errorLine(text)),
    });
  // Subcommands created with .command() from here on inherit the settings above.
  asCommandGroup(program).usage("[options] [command]");
  addServeCommand(program, io);
  addMigrateCommand(program, io);
  addAdminCommands(program, io);
  return program;
}

/** Runs the program on `argv` (the arguments after the program name) and returns the exit status. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    await buildProgram(io).parseAsync([...argv], { from: "user" });
    return ExitCode.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander has printed its message (or the help) already.
      return error.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    if (error instanceof UsageError) {
      io.stderr(errorLine(error.message));
      return ExitCode.usage;
    }
    if (error instanceof CliFailure) {
      io.stderr(errorLine(error.message));
      return error.exitCode;
    }
    io.stderr(errorLine(error instanceof Error ? error.message : String(error)));
    return ExitCode.failure;
  }
}

/** One line: "darkbloom-coordinator: <message>". */
function errorLine(message: string): string {
  const text = message
    .replace(/^error: /, "")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .join(" ");
  return `${PROGRAM_NAME}: ${text}\n`;
}
