import { createRequire } from "node:module";
import { createProgram, runProgram } from "@darkbloom/cli-kit";
import type { Command } from "commander";
import { addAdminCommands } from "./admin.js";
import { type CliIo, PROGRAM_NAME } from "./io.js";
import { addMigrateCommand } from "./migrate.js";
import { addServeCommand } from "./serve.js";

const { version } = createRequire(import.meta.url)("../../package.json") as { version: string };

/** The `darkbloom-coordinator` command line (see createProgram: every message goes through `io`). */
export function buildProgram(io: CliIo): Command {
  const program = createProgram(io, {
    name: PROGRAM_NAME,
    description: "Darkbloom coordinator: OpenAI-compatible API, provider routing and the admin API",
    version,
  });
  addServeCommand(program, io);
  addMigrateCommand(program, io);
  addAdminCommands(program, io);
  return program;
}

/** Runs the program on `argv` (the arguments after the program name) and returns the exit status. */
export function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  return runProgram(buildProgram(io), argv, io);
}
