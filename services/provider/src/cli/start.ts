import { stat } from "node:fs/promises";
import { join } from "node:path";
import type { Command } from "commander";
import type { SettingSource } from "../config/config.js";
import { SETTING_NAMES, SETTINGS, type SettingName } from "../config/settings.js";
import { ServiceError, type ServiceSpec } from "../service/index.js";
import { INSTALL_LAYOUT } from "../update/installer.js";
import type { CliContext } from "./context.js";
import { CliFailure } from "./io.js";
import { addSettingOptions, checkCoordinatorTransport, resolveFromOptions } from "./settings-options.js";

/**
 * `start`: installs and starts the daemon under the platform's service manager (launchd agent
 * io.darkbloom.provider, or the systemd user unit). The configuration is checked first (exit 64);
 * settings given on the command line or in the environment are written into the service definition,
 * settings from the YAML file are read by the service itself (edit the file, then start again).
 */
export function addStartCommand(program: Command, context: CliContext): void {
  const command = program
    .command("start")
    .description("install and start the daemon as a service (launchd / systemd)");
  addSettingOptions(command);
  command.action(async (opts: Record<string, unknown>) => {
    const resolved = resolveFromOptions(opts, context);
    checkCoordinatorTransport(resolved);
    const { config, sources } = resolved;
    const serveArgs = ["--data-dir", config.dataDir];
    if (config.configFile) serveArgs.push("--config", config.configFile);
    for (const name of SETTING_NAMES) {
      if (name === "dataDir" || !explicit(sources[name])) continue;
      serveArgs.push(...flagArgs(name, config[name]));
    }
    // After `darkbloom update`, the service runs the installed release through the `current` link, so
    // later updates take effect on the next restart without running start again.
    const updated = join(config.dataDir, "releases", INSTALL_LAYOUT.current, INSTALL_LAYOUT.entry);
    const spec: ServiceSpec = {
      nodePath: context.nodePath,
      scriptPath: (await exists(updated)) ? updated : context.scriptPath,
      serveArgs,
      dataDir: config.dataDir,
      logFile: config.logFile,
    };
    let service: ReturnType<CliContext["serviceManager"]>;
    try {
      service = context.serviceManager();
      await service.start(spec);
    } catch (error) {
      if (error instanceof ServiceError) throw new CliFailure(error.message);
      throw error;
    }
    context.io.stdout(`started ${service.name} (${service.kind}, ${service.definitionPath})\n`);
    context.io.stdout(`logs: ${config.logFile} (darkbloom logs --follow)\n`);
    if (service.kind === "systemd") {
      context.io.stdout("to keep it running after you log out: loginctl enable-linger $USER\n");
    }
  });
}

function explicit(source: SettingSource): boolean {
  return source.kind === "flag" || source.kind === "env";
}

function flagArgs(name: SettingName, value: unknown): string[] {
  const flag = SETTINGS[name].flag;
  if (value === undefined) return [];
  // A switch is written only when on: off is its default, and a switch takes no value.
  if (typeof value === "boolean") return value ? [flag] : [];
  if (Array.isArray(value)) return value.flatMap((v) => [flag, String(v)]);
  return [flag, String(value)];
}

function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
