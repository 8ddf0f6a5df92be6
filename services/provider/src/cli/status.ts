import type { Command } from "commander";
import { pidFileOf } from "../config/paths.js";
import { ServiceError } from "../service/index.js";
import { processAlive, readPidFile } from "../service/pid-file.js";
import type { CliContext } from "./context.js";
import { CliFailure } from "./io.js";
import { addSettingOptions, resolveFromOptions } from "./settings-options.js";

/** Exit status of `status` when the daemon is not running (LSB: "program is not running"). */
export const NOT_RUNNING = 3;

/** `status`: the service manager's view and the data directory's PID file; exit 0 when running, 3 when not. */
export function addStatusCommand(program: Command, context: CliContext): void {
  const command = program
    .command("status")
    .description("show whether the daemon runs (exit 0) or not (exit 3)");
  addSettingOptions(command, ["dataDir"]);
  command.action(async (opts: Record<string, unknown>) => {
    const { config } = resolveFromOptions(opts, context);
    let running = false;
    try {
      const service = context.serviceManager();
      const status = await service.status();
      running = status.running;
      context.io.stdout(
        `service: ${status.detail}${status.installed ? "" : ` (no ${service.definitionPath})`}\n`,
      );
    } catch (error) {
      if (!(error instanceof ServiceError)) throw error;
      context.io.stdout(`service: ${error.message}\n`);
    }
    const pidPath = pidFileOf(config.dataDir);
    const pid = await readPidFile(pidPath);
    if (pid === undefined) context.io.stdout(`daemon: not running (no PID file in ${config.dataDir})\n`);
    else if (processAlive(pid)) {
      running = true;
      context.io.stdout(`daemon: running, pid ${pid} (${pidPath})\n`);
    } else context.io.stdout(`daemon: not running (stale PID file ${pidPath} names pid ${pid})\n`);
    if (!running) throw new CliFailure("", NOT_RUNNING);
  });
}
