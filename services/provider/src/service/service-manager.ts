import type { CommandResult, CommandRunner } from "./runner.js";

/** How the service runs the daemon: `<nodePath> <scriptPath> serve <serveArgs...>`. */
export interface ServiceSpec {
  nodePath: string;
  scriptPath: string;
  /** Arguments after `serve`, e.g. ["--config", "/path/provider.yaml"]. */
  serveArgs: string[];
  dataDir: string;
  /** The daemon's stdout and stderr are appended here. */
  logFile: string;
}

export interface ServiceStatus {
  /** The service definition file exists. */
  installed: boolean;
  /** The service manager knows the service (loaded / enabled). */
  loaded: boolean;
  running: boolean;
  pid: number | undefined;
  /** The service manager's own report, for the user. */
  detail: string;
}

/** The platform's service manager for the daemon: launchd on macOS, systemd (user) on Linux. */
export interface ServiceManager {
  readonly kind: "launchd" | "systemd";
  /** launchd label or systemd unit name. */
  readonly name: string;
  /** The generated plist or unit file. */
  readonly definitionPath: string;
  /** The plist or unit for a spec, exactly as written. */
  render(spec: ServiceSpec): string;
  /** Writes the definition and (re)starts the service so that it also starts at login. */
  start(spec: ServiceSpec): Promise<void>;
  stop(): Promise<void>;
  /**
   * Stops the service if it runs (SIGTERM: the daemon drains) and starts it again from its installed
   * definition, so that it reads its config file anew (autotune --apply).
   */
  restart(): Promise<void>;
  status(): Promise<ServiceStatus>;
}

/** A service manager command failed. */
export class ServiceError extends Error {
  override readonly name = "ServiceError";
}

/** Runs a command and throws ServiceError naming it when it fails. */
export async function mustRun(
  runner: CommandRunner,
  command: string,
  args: readonly string[],
): Promise<CommandResult> {
  const result = await runner.run(command, args);
  if (result.code !== 0) {
    const why = (result.stderr || result.stdout).trim().split("\n")[0] || `exit status ${result.code}`;
    throw new ServiceError(`${command} ${args.join(" ")} failed: ${why}`);
  }
  return result;
}
