import { type Command, Option } from "commander";
import { ConfigError, type ResolvedConfig, resolveConfig } from "../config/config.js";
import { coordinatorTransportProblem } from "../config/coordinator-transport.js";
import { SETTING_NAMES, SETTINGS, type SettingName } from "../config/settings.js";
import type { CliContext } from "./context.js";
import { UsageError } from "./io.js";

/** The commander attribute of each setting's flag, e.g. kvBits for --kv-bits. */
const ATTRIBUTES = new Map<SettingName, string>();

/** Adds `--config` and the flags of `names` (default: every setting) to a command. */
export function addSettingOptions(command: Command, names: readonly SettingName[] = SETTING_NAMES): Command {
  command.option(
    "--config <file>",
    "YAML config file (env DARKBLOOM_CONFIG, default ~/.config/darkbloom/provider.yaml)",
  );
  for (const name of names) {
    const spec = SETTINGS[name];
    const flags = spec.arg === "" ? spec.flag : `${spec.flag} ${spec.arg}`;
    const option = new Option(flags, `${spec.description} (env ${spec.env})`);
    if (name === "models")
      option.argParser((value: string, previous: string[] | undefined) => [...(previous ?? []), value]);
    ATTRIBUTES.set(name, option.attributeName());
    command.addOption(option);
  }
  return command;
}

/**
 * The configuration for a command's options: CLI flag > DARKBLOOM_* env > YAML > default, validated.
 * An invalid value is a usage error (exit 64) with the preflight's one-line message.
 */
export function resolveFromOptions(opts: Record<string, unknown>, context: CliContext): ResolvedConfig {
  const flags: Partial<Record<SettingName, string | string[]>> = {};
  for (const [name, attribute] of ATTRIBUTES) {
    const value = opts[attribute];
    if (typeof value === "string" || Array.isArray(value)) flags[name] = value as string | string[];
    else if (value === true) flags[name] = "true"; // a switch given
  }
  try {
    return resolveConfig({
      flags,
      configPath: typeof opts.config === "string" ? opts.config : undefined,
      env: context.io.env,
      cwd: context.cwd,
      defaults: context.defaults,
    });
  } catch (error) {
    if (error instanceof ConfigError) throw new UsageError(error.message);
    throw error;
  }
}

/**
 * The preflight of every command that talks to the coordinator (serve, start, login, logout,
 * update): a plain http:// coordinator on another machine is a usage error (exit 64) unless
 * --insecure was given, before anything is loaded or any connection is opened. `risk` says what would
 * be exposed (default: the account token).
 */
export function checkCoordinatorTransport(resolved: ResolvedConfig, risk?: string): void {
  const problem = coordinatorTransportProblem(resolved.config, resolved.sources, risk);
  if (problem) throw new UsageError(problem);
}
