import { readFileSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { isMap, isScalar, parseDocument } from "yaml";
import { defaultConfigPath, logFileOf, modelsDirOf } from "./paths.js";
import {
  type DefaultsContext,
  InvalidValue,
  machineDefaultsContext,
  type ParseContext,
  SETTING_NAMES,
  SETTINGS,
  type SettingName,
  type Settings,
} from "./settings.js";

/** The daemon's resolved configuration. */
export interface ProviderConfig extends Settings {
  /** `<dataDir>/models`. */
  modelsDir: string;
  /** `<dataDir>/logs/provider.log`. */
  logFile: string;
  /** The YAML file that was read, if one was. */
  configFile: string | undefined;
}

/** Where one setting's value came from. */
export type SettingSource =
  | { kind: "flag"; flag: string }
  | { kind: "env"; variable: string }
  | { kind: "file"; path: string; key: string }
  | { kind: "default" };

export interface ResolvedConfig {
  config: ProviderConfig;
  sources: Record<SettingName, SettingSource>;
}

/** Everything a configuration is resolved from. */
export interface ConfigInputs {
  /** Command-line values as commander parsed them (strings; `models` may be a list). */
  flags?: Partial<Record<SettingName, string | string[] | undefined>>;
  /** --config: the YAML file to read instead of the default one (which may be absent). */
  configPath?: string | undefined;
  env?: Readonly<Record<string, string | undefined>>;
  cwd?: string;
  /** Defaults context; by default the machine's (home directory, memory, cores). */
  defaults?: Partial<DefaultsContext>;
}

/** An invalid configuration: one line for the user; the CLI exits 64. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** The YAML keys of the config file, by setting. */
export const YAML_KEYS: Record<string, SettingName> = Object.fromEntries(
  SETTING_NAMES.map((name) => [SETTINGS[name].yaml, name]),
);

/**
 * Resolves every setting with precedence CLI flag > DARKBLOOM_* environment > YAML > default, and
 * validates each value (the preflight). Throws ConfigError with a one-line message naming the setting
 * and where its value came from, e.g. `--kv-bits must be 4 or 8 (got 7 from the command line)`.
 */
export function resolveConfig(inputs: ConfigInputs = {}): ResolvedConfig {
  const env = inputs.env ?? process.env;
  const cwd = inputs.cwd ?? process.cwd();
  const defaults: DefaultsContext = {
    ...machineDefaultsContext(env),
    ...stripUndefined(inputs.defaults ?? {}),
  };
  const home = defaults.home;

  const file = readConfigFile(inputs.configPath, env, cwd, home);
  const values: Partial<Record<SettingName, unknown>> = {};
  const sources = {} as Record<SettingName, SettingSource>;

  for (const name of SETTING_NAMES) {
    const spec = SETTINGS[name];
    const flag = inputs.flags?.[name];
    const fromEnv = env[spec.env];
    let raw: unknown;
    let source: SettingSource;
    let ctx: ParseContext = { baseDir: cwd, home };
    if (flag !== undefined && !(Array.isArray(flag) && flag.length === 0)) {
      raw = flag;
      source = { kind: "flag", flag: spec.flag };
    } else if (fromEnv !== undefined && fromEnv !== "") {
      raw = fromEnv;
      source = { kind: "env", variable: spec.env };
    } else if (file && file.values[name] !== undefined) {
      raw = file.values[name];
      source = { kind: "file", path: file.path, key: spec.yaml };
      ctx = { baseDir: dirname(file.path), home };
    } else {
      values[name] = spec.default(defaults);
      sources[name] = { kind: "default" };
      continue;
    }
    try {
      values[name] = spec.parse(raw, ctx);
    } catch (error) {
      if (!(error instanceof InvalidValue)) throw error;
      throw new ConfigError(
        `${settingLabel(name, source)} ${error.message} (got ${show(raw)} from ${sourceLabel(source)})`,
      );
    }
    sources[name] = source;
  }

  const settings = values as Settings;
  return {
    config: {
      ...settings,
      modelsDir: modelsDirOf(settings.dataDir),
      logFile: logFileOf(settings.dataDir),
      configFile: file?.path,
    },
    sources,
  };
}

/** How the user named the setting in the source its value came from. */
export function settingLabel(name: SettingName, source: SettingSource): string {
  const spec = SETTINGS[name];
  switch (source.kind) {
    case "flag":
      return spec.flag;
    case "env":
      return spec.env;
    case "file":
      return spec.yaml;
    case "default":
      return spec.flag;
  }
}

export function sourceLabel(source: SettingSource): string {
  switch (source.kind) {
    case "flag":
      return "the command line";
    case "env":
      return "the environment";
    case "file":
      return source.path;
    case "default":
      return "the default";
  }
}

function show(raw: unknown): string {
  if (typeof raw === "string") return raw === "" || /\s/.test(raw) ? JSON.stringify(raw) : raw;
  if (Array.isArray(raw)) return raw.map((v) => show(v)).join(",");
  return JSON.stringify(raw) ?? String(raw);
}

interface ConfigFile {
  path: string;
  values: Partial<Record<SettingName, unknown>>;
}

/** Reads the YAML file: the one named by --config or DARKBLOOM_CONFIG (which must exist), else the default one if present. */
function readConfigFile(
  flagPath: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
  cwd: string,
  home: string,
): ConfigFile | undefined {
  let path: string;
  let explicit: string | undefined;
  if (flagPath !== undefined && flagPath !== "") {
    path = absolute(flagPath, cwd, home);
    explicit = "--config";
  } else if (env.DARKBLOOM_CONFIG) {
    path = absolute(env.DARKBLOOM_CONFIG, cwd, home);
    explicit = "DARKBLOOM_CONFIG";
  } else {
    path = defaultConfigPath(home);
  }
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" && !explicit) return undefined;
    const why = code === "ENOENT" ? "does not exist" : `cannot be read (${code ?? (error as Error).message})`;
    throw new ConfigError(`${explicit ?? "config file"} ${path} ${why}`);
  }
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    const first = doc.errors[0];
    const where = first?.linePos?.[0] ? ` at line ${first.linePos[0].line}` : "";
    throw new ConfigError(`${path} is not valid YAML${where}: ${firstLine(first?.message ?? "parse error")}`);
  }
  const values: Partial<Record<SettingName, unknown>> = {};
  if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null))
    return { path, values };
  if (!isMap(doc.contents)) throw new ConfigError(`${path} must be a mapping of settings (key: value)`);
  for (const pair of doc.contents.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
    const name = YAML_KEYS[key];
    if (!name) {
      throw new ConfigError(
        `unknown setting ${JSON.stringify(key)} in ${path} (known: ${Object.keys(YAML_KEYS).join(", ")})`,
      );
    }
    const value = (pair.value as { toJSON?: () => unknown } | null)?.toJSON?.() ?? null;
    if (value !== null) values[name] = value;
  }
  return { path, values };
}

function absolute(p: string, cwd: string, home: string): string {
  const expanded = p === "~" ? home : p.startsWith("~/") ? join(home, p.slice(2)) : p;
  return isAbsolute(expanded) ? resolve(expanded) : resolve(cwd, expanded);
}

function firstLine(text: string): string {
  return text.split("\n")[0]?.trim() ?? text;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
