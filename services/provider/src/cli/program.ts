import { createProgram, runProgram } from "@darkbloom/cli-kit";
import type { Command } from "commander";
import { DAEMON_VERSION } from "../daemon.js";
import { addAutotuneCommand } from "./autotune.js";
import { addBenchmarkCommand } from "./benchmark.js";
import { type CliContext, type CliDeps, defaultDeps } from "./context.js";
import { addDoctorCommand } from "./doctor.js";
import { type CliIo, PROGRAM_NAME } from "./io.js";
import { addLoginCommands } from "./login.js";
import { addLogsCommand } from "./logs.js";
import { addModelsCommands } from "./models.js";
import { addServeCommand } from "./serve.js";
import { addStartCommand } from "./start.js";
import { addStatusCommand } from "./status.js";
import { addStopCommand } from "./stop.js";
import { addUpdateCommand } from "./update.js";
import { addVerifyCommand } from "./verify.js";

/** The `darkbloom` command line (see createProgram: every message goes through `io`). */
export function buildProgram(io: CliIo, deps: Partial<CliDeps> = {}): Command {
  const { defaults, ...rest } = { ...defaultDeps(io), ...deps };
  const context: CliContext = { ...rest, defaults, io };
  const program = createProgram(io, {
    name: PROGRAM_NAME,
    description: "Darkbloom provider: serve models to the Darkbloom network",
    version: DAEMON_VERSION,
  });
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
  addAutotuneCommand(program, context);
  addVerifyCommand(program, context);
  return program;
}

/** Runs the program on `argv` (the arguments after the program name) and returns the exit status. */
export function runCli(argv: readonly string[], io: CliIo, deps: Partial<CliDeps> = {}): Promise<number> {
  return runProgram(buildProgram(io, deps), argv, io);
}
