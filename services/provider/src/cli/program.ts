import { Command, CommanderError } from "commander";
import { DAEMON_VERSION } from "../daemon.js";
import { addBenchmarkCommand } from "./benchmark.js";
import { asCommandGroup } from "./command-group.js";
import { type CliContext, type CliDeps, defaultDeps } from "./context.js";
import { addDoctorCommand } from "./doctor.js";
import { CliFailure, type CliIo, ExitCode, PROGRAM_NAME, UsageError } from "./io.js";
import { addLoginCommands } from "./login.js";
import { addLogsCommand } from "./logs.js";
import { addModelsCommands } from "./models.js";
import { addServeCommand } from "./serve.js";
import { addStartCommand } from "./start.js";
import { addStatusCommand } from "./status.js";
import { addStopCommand } from "./stop.js";
import { addUpdateCommand } from "./update.js";
import { addVerifyCommand } from "./verify.js";

/**
 * The `darkbloom` command line. Commander never exits the process: usage errors throw CommanderError
 * (see runCli) and every message goes through `io`.
 */
export function buildProgram(io: CliIo, deps: Partial<CliDeps> = {}): Command {
  const { defaults, ...rest } = { ...defaultDeps(io), ...deps };
  const context: CliContext = { ...rest, defaults, io };
  const program = new Command(PROGRAM_NAME)
    .description("Darkbloom provider: serve models to the Darkbloom network")
    .version(DAEMON_VERSION)
    .enablePositionalOptions()
    .exitOverride()
    .configureHelp({ subcommandTerm: (command) => `${command.name()} ${command.usage()}` })
    .configureOutput({
      writeOut: (text) => io.stdout(text),
      writeErr: (text) => io.stderr(text),
      outputError: (text, write) => write(errorLine(text)),
    });
  asCommandGroup(program).usage("[options] [command]");
  addServeCommand(program, context);
  addStartCommand(program, context);
  addStopCommand(program, context);
  addStatusCommand(program, context);
  addDoctorCommand(program, context);
  addLogsCommand(program, context);
  addLoginCommands(program, context);
  addModelsCommands(program, context);
  addUpdateCommand(program, context);
  addBenchmarkCommand(program, context);
  addVerifyCommand(program, context);
  return program;
}

/** Runs the program on `argv` (the arguments after the program name) and returns the exit status. */
export async function runCli(
  argv: readonly string[],
  io: CliIo,
  deps: Partial<CliDeps> = {},
): Promise<number> {
  try {
    await buildProgram(io, deps).parseAsync([...argv], { from: "user" });
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
      if (error.message) io.stderr(errorLine(error.message));
      return error.exitCode;
    }
    io.stderr(errorLine(error instanceof Error ? error.message : String(error)));
    return ExitCode.failure;
  }
}

/** One line: "darkbloom: <message>". */
function errorLine(message: string): string {
  const text = message
    .replace(/^error: /, "")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .join(" ");
  return `${PROGRAM_NAME}: ${text}\n`;
}
