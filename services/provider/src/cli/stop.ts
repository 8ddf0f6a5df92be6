import type { Command } from "commander";
import { ServiceError } from "../service/index.js";
import type { CliContext } from "./context.js";
import { CliFailure } from "./io.js";

/** `stop`: stops the service (the daemon drains on SIGTERM). */
export function addStopCommand(program: Command, context: CliContext): void {
  program
    .command("stop")
    .description("stop the daemon service")
    .action(async () => {
      try {
        const service = context.serviceManager();
        await service.stop();
        context.io.stdout(`stopped ${service.name}\n`);
      } catch (error) {
        if (error instanceof ServiceError) throw new CliFailure(error.message);
        throw error;
      }
    });
}
