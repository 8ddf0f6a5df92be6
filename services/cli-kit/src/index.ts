export { asCommandGroup, commandGroup, commandPath } from "./command-group.js";
export { CliFailure, type CliIo, ExitCode, processIo, UsageError } from "./io.js";
export { createProgram, type ProgramSpec, runProgram } from "./program.js";
