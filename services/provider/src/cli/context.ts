import { fileURLToPath } from "node:url";
import { type DestinationStream, type Logger, pino } from "pino";
import type { ProviderConfig } from "../config/config.js";
import type { DefaultsContext } from "../config/settings.js";
import type { DaemonOptions } from "../daemon.js";
import type { Engine } from "../engine/engine.js";
import type { CpuTopology } from "../machine/topology.js";
import { type ServiceManager, serviceManagerFor } from "../service/index.js";
import type { CliIo } from "./io.js";
import type { ProcessEntry } from "./threads-check.js";

/** What the commands reach outside the process through; tests replace any of it. */
export interface CliDeps {
  /** Creates the serving engine (default: the llama engine on node-llama-cpp). */
  createEngine(config: ProviderConfig, logger: Logger): Promise<Engine>;
  /** The platform's service manager (launchd / systemd). */
  serviceManager(): ServiceManager;
  fetch: typeof fetch;
  platform: NodeJS.Platform;
  arch: string;
  /** Node and the darkbloom script, for the service definition. */
  nodePath: string;
  scriptPath: string;
  /** Working directory relative config paths resolve against. */
  cwd: string;
  /** Overrides of the machine defaults (home, memory, cores). */
  defaults?: Partial<DefaultsContext>;
  /** The CPU topology (`doctor`; default: detected, machine/topology.ts). */
  cpuTopology?: () => Promise<CpuTopology>;
  /** Running processes (`doctor` looks for other daemons; default: `ps`); undefined when unknown. */
  processes?: () => Promise<ProcessEntry[] | undefined>;
  /** Where the daemon logs (default: stderr). */
  logDestination?: DestinationStream;
  /** Extra daemon options (tests: faster reconnect). */
  daemon?: Partial<Omit<DaemonOptions, "engine" | "logger">>;
}

export interface CliContext extends Omit<CliDeps, "defaults"> {
  io: CliIo;
  defaults: Partial<DefaultsContext> | undefined;
}

/** The daemon's structured logger: JSON lines on stderr (the service's log file). Never logs prompts. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "provider" },
      redact: { paths: ["accountToken", "*.accountToken"], censor: "[redacted]" },
    },
    destination ?? pino.destination({ fd: 2, sync: true }),
  );
}

export function defaultDeps(io: CliIo): CliDeps {
  return {
    createEngine: async (config, logger) => {
      const { createDefaultEngine } = await import("./engine-factory.js");
      return createDefaultEngine(config, logger);
    },
    serviceManager: () => serviceManagerFor({ home: io.env.HOME || undefined }),
    fetch: globalThis.fetch,
    platform: process.platform,
    arch: process.arch,
    nodePath: process.execPath,
    scriptPath: fileURLToPath(new URL("../bin/darkbloom.js", import.meta.url)),
    cwd: process.cwd(),
  };
}
