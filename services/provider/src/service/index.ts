import { homedir } from "node:os";
import { LaunchdService } from "./launchd.js";
import { type CommandRunner, processRunner } from "./runner.js";
import { ServiceError, type ServiceManager } from "./service-manager.js";
import { SystemdService } from "./systemd.js";

export { LAUNCHD_LABEL, LaunchdService } from "./launchd.js";
export { type CommandResult, type CommandRunner, processRunner } from "./runner.js";
export {
  ServiceError,
  type ServiceManager,
  type ServiceSpec,
  type ServiceStatus,
} from "./service-manager.js";
export { SYSTEMD_UNIT, SystemdService } from "./systemd.js";

export interface ServiceManagerOptions {
  platform?: NodeJS.Platform;
  home?: string;
  uid?: number;
  runner?: CommandRunner;
}

/** launchd on macOS, systemd (user) on Linux; ServiceError elsewhere. */
export function serviceManagerFor(options: ServiceManagerOptions = {}): ServiceManager {
  const platform = options.platform ?? process.platform;
  const home = options.home ?? homedir();
  const runner = options.runner ?? processRunner;
  if (platform === "darwin") {
    return new LaunchdService({ home, uid: options.uid ?? process.getuid?.() ?? 501, runner });
  }
  if (platform === "linux") return new SystemdService({ home, runner });
  throw new ServiceError(
    `running as a service is supported on macOS (launchd) and Linux (systemd), not ${platform}`,
  );
}
