import type { Command } from "commander";
import { ConfigError } from "../config/config.js";
import { DaemonStartError, DEFAULT_DRAIN_DEADLINE_MS, type RunningDaemon, startDaemon } from "../daemon.js";
import { parseListenAddress } from "../metrics/listen-address.js";
import { AlreadyRunningError } from "../service/pid-file.js";
import type { CliContext } from "./context.js";
import { createLogger } from "./context.js";
import { CliFailure, UsageError } from "./io.js";
import { addSettingOptions, checkCoordinatorTransport, resolveFromOptions } from "./settings-options.js";

/** `serve`: runs the daemon in the foreground until SIGINT or SIGTERM, then drains and exits 0. */
export function addServeCommand(program: Command, context: CliContext): void {
  const command = program.command("serve").description("run the provider daemon in the foreground");
  addSettingOptions(command);
  command
    .option(
      "--drain-timeout <seconds>",
      `on SIGTERM/SIGINT, how long in-flight requests may finish (default ${DEFAULT_DRAIN_DEADLINE_MS / 1000})`,
    )
    .option(
      "--no-join",
      "serve the local engine (models loaded, metrics and health listener) without dialling the coordinator",
    )
    .action(async (opts: Record<string, unknown>) => {
      const drainMs = drainTimeout(opts.drainTimeout);
      const resolved = resolveFromOptions(opts, context);
      // Without a link nothing travels to the coordinator, so its transport does not matter.
      const join = opts.join !== false;
      if (join) checkCoordinatorTransport(resolved);
      const { config } = resolved;
      // Validated by the preflight; a value the operator chose must bind, the default need not.
      const metricsListen = parseListenAddress(config.metricsListen);
      const metrics = metricsListen && {
        listen: metricsListen,
        required: resolved.sources.metricsListen.kind !== "default",
      };
      const log = createLogger(config.logLevel, context.logDestination);
      let engine: Awaited<ReturnType<CliContext["createEngine"]>>;
      try {
        engine = await context.createEngine(config, log);
      } catch (error) {
        // A setting the machine cannot honour (--engine native without the addon) is the operator's to fix.
        if (error instanceof UsageError) throw error;
        throw new CliFailure(`the engine could not start: ${(error as Error).message}`);
      }
      let daemon: RunningDaemon;
      try {
        daemon = await startDaemon(config, { engine, logger: log, metrics, ...context.daemon, join });
      } catch (error) {
        if (error instanceof ConfigError) throw new UsageError(error.message);
        if (error instanceof AlreadyRunningError || error instanceof DaemonStartError) {
          throw new CliFailure(error.message);
        }
        throw error;
      }
      const models = daemon.models.map((m) => m.id).join(", ");
      context.io.stdout(
        join
          ? `serving ${models} to ${config.coordinatorUrl} (pid ${process.pid})\n`
          : `serving ${models} locally without joining the network (pid ${process.pid}${daemon.metricsUrl ? `, ${daemon.metricsUrl}/healthz` : ""})\n`,
      );
      const signal = await Promise.race([context.io.shutdownSignal(), daemon.stopped.then(() => undefined)]);
      if (signal) context.io.stdout(`${signal}: draining (up to ${drainMs / 1000} s)\n`);
      await daemon.stop({ deadlineMs: drainMs });
      if (daemon.failure) throw new CliFailure(daemon.failure);
      context.io.stdout("stopped\n");
    });
}

function drainTimeout(value: unknown): number {
  if (value === undefined) return DEFAULT_DRAIN_DEADLINE_MS;
  const seconds = typeof value === "string" && /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!(seconds >= 0 && seconds <= 3600)) {
    throw new UsageError(
      `--drain-timeout must be a whole number of seconds from 0 to 3600 (got ${String(value)})`,
    );
  }
  return seconds * 1000;
}
