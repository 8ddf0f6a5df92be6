import type { CliIo } from "../cli/io.js";
import { runCli } from "../cli/program.js";

/** What one in-process CLI run printed and returned. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `darkbloom-coordinator argv…` in-process with captured output and the given environment. */
export async function runCliCaptured(
  argv: string[],
  env: Record<string, string | undefined>,
): Promise<CliRun> {
  let stdout = "";
  let stderr = "";
  const io: CliIo = {
    stdout: (text) => {
      stdout += text;
    },
    stderr: (text) => {
      stderr += text;
    },
    env,
    shutdownSignal: () => new Promise(() => undefined),
  };
  const code = await runCli(argv, io);
  return { code, stdout, stderr };
}
