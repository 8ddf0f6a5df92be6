import { Command, CommanderError } from "commander";
import { asCommandGroup } from "./command-group.js";
import { CliFailure, type CliIo, ExitCode, UsageError } from "./io.js";

export interface ProgramSpec {
  /** The command's name, which starts every error line. */
  name: string;
  description: string;
  version: string;
}

/**
 * A program whose subcommands are added by the caller. Commander never exits the process: usage
 * errors throw CommanderError (see runProgram) and every message goes through `io`. Options are
 * positional: those before a subcommand belong to the command they follow.
 */
export function createProgram(io: CliIo, spec: ProgramSpec): Command {
  const program = new Command(spec.name)
    .description(spec.description)
    .version(spec.version)
    .enablePositionalOptions()
    .exitOverride()
    .configureHelp({ subcommandTerm: (command) => `${command.name()} ${command.usage()}` })
    .configureOutput({
      writeOut: (text) => io.stdout(text),
      writeErr: (text) => io.stderr(text),
      outputError: (text, write) => write(errorLine(spec.name, text)),
    });
  // Subcommands created with .command() from here on inherit the settings above.
  asCommandGroup(program).usage("[options] [command]");
  return program;
}

/**
 * Runs `program` on `argv` (the arguments after the program name) and returns the exit status:
 * 0, 64 for a usage error (one line on stderr), a CliFailure's own status, 1 for anything else.
 */
export async function runProgram(program: Command, argv: readonly string[], io: CliIo): Promise<number> {
  try {
    await program.parseAsync([...argv], { from: "user" });
    return ExitCode.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander has printed its message (or the help) already.
      return error.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    if (error instanceof UsageError) {
      io.stderr(errorLine(program.name(), error.message));
      return ExitCode.usage;
    }
    if (error instanceof CliFailure) {
      if (error.message) io.stderr(errorLine(program.name(), error.message));
      return error.exitCode;
    }
    io.stderr(errorLine(program.name(), error instanceof Error ? error.message : String(error)));
    return ExitCode.failure;
  }
}

/** One line: "<program>: <message>", whatever commander or the error put on several. */
function errorLine(programName: string, message: string): string {
  const text = message
    .replace(/^error: /, "")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .join(" ");
  return `${programName}: ${text}\n`;
}
