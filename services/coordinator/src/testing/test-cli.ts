import { testIo } from "@darkbloom/cli-kit/testing";
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
  const t = testIo(env);
  const code = await runCli(argv, t.io);
  return { code, stdout: t.stdout(), stderr: t.stderr() };
}
