import { availableParallelism, homedir, totalmem } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import {
  DEFAULT_METRICS_LISTEN,
  formatListenAddress,
  ListenAddressError,
  parseListenAddress,
} from "../metrics/listen-address.js";
import { defaultDataDir } from "./paths.js";

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Every setting of the provider daemon, each resolved CLI flag > DARKBLOOM_* env > YAML > default. */
export interface Settings {
  /** Base URL of the coordinator the daemon dials, e.g. http://127.0.0.1:8080. */
  coordinatorUrl: string;
  /** Data directory: models, logs, PID file, keys. */
  dataDir: string;
  /**
   * Ids of the models to serve (GGUF file names in `<dataDir>/models` without `.gguf`, or MLX
   * checkpoint directory names); empty serves every model there.
   */
  models: string[];
  /** KV-cache quantization in bits; undefined keeps the cache unquantized (F16). */
  kvBits: 4 | 8 | undefined;
  /** Largest prompt + max_tokens accepted, in tokens (default by memory tier). */
  maxContext: number;
  /** Continuous-batching width: requests decoded together. */
  maxBatch: number;
  /** Unload a model after this many minutes without requests; 0 disables. */
  idleTimeoutMinutes: number;
  /**
   * CPU threads the engine evaluates with; "auto" chooses per model when it loads, from its size and
   * the machine's physical cores (engine/threads.ts).
   */
  threads: number | "auto";
  logLevel: LogLevel;
  /** Overrides the heartbeat interval the coordinator asks for in its RegisterAck (ms). */
  heartbeatIntervalMs: number | undefined;
  /**
   * Allows a plain http:// coordinator on another machine, to which the account token and every
   * request would travel unencrypted (loopback http:// and https:// need no such permission).
   */
  insecure: boolean;
  /**
   * Where `serve` answers GET /metrics and GET /healthz: "HOST:PORT" (canonical: IPv6 in brackets)
   * or "off". Only `serve` reads it; the daemon library listens only when asked to.
   */
  metricsListen: string;
  /** The TPM that holds the attestation key on Linux: "auto", "off" or a TCTI configuration. */
  tpm: string;
  /**
   * `serve` joins the network even when the engine computes on the CPU (it refuses otherwise: a GPU
   * host whose GPU binaries are missing would serve at a fraction of its speed without a word).
   */
  allowCpu: boolean;
  /**
   * The inference engine: "llama" (node-llama-cpp), "native" (the project's llama.cpp addon,
   * @darkbloom/native/llama; npm run build:native), "mlx" (the MLX addon, @darkbloom/native/mlx, for
   * MLX checkpoints; npm run build:native with an MLX installation), or "auto": mlx for MLX
   * checkpoints, and for GGUF files native on a machine without a GPU when its addon loads, else llama
   * (cli/engine-factory.ts).
   */
  engine: EngineChoice;
}

export const ENGINE_CHOICES = ["auto", "llama", "native", "mlx"] as const;
export type EngineChoice = (typeof ENGINE_CHOICES)[number];

export type SettingName = keyof Settings;

/** What the defaults depend on. */
export interface DefaultsContext {
  home: string;
  totalMemoryBytes: number;
  cpuCount: number;
}

/** Where relative paths and `~` in a value are resolved from. */
export interface ParseContext {
  baseDir: string;
  home: string;
}

/** A value a setting cannot take; `problem` completes "<setting> …", e.g. "must be 4 or 8". */
export class InvalidValue extends Error {
  override readonly name = "InvalidValue";
}

export interface SettingSpec<K extends SettingName> {
  name: K;
  /** Command-line flag, e.g. "--kv-bits". */
  flag: string;
  /** Placeholder in the flag's help, e.g. "<bits>"; "" for a switch that takes no value. */
  arg: string;
  env: string;
  yaml: string;
  description: string;
  parse(raw: unknown, ctx: ParseContext): Settings[K];
  default(ctx: DefaultsContext): Settings[K];
}

const GIB = 1024 ** 3;
const MAX_CONTEXT_LIMIT = 10_000_000;
/** The coordinator refuses a Register whose max_batch is above this. */
const MAX_BATCH_LIMIT = 4096;
const MODEL_ID = /^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$/;

/**
 * Default max context by memory tier: below 16 GB 20000, below 32 GB 50000, below 64 GB 120000, else
 * 200000. Memory is rounded to whole GiB first, so a "16 GB" machine that reports a little less (the
 * kernel keeps some) still lands in the 16 GB tier.
 */
export function defaultMaxContext(totalMemoryBytes: number): number {
  const gib = Math.round(totalMemoryBytes / GIB);
  if (gib < 16) return 20_000;
  if (gib < 32) return 50_000;
  if (gib < 64) return 120_000;
  return 200_000;
}

function integer(raw: unknown, min: number, max: number, what = "a whole number"): number {
  let n: number;
  if (typeof raw === "number") n = raw;
  else if (typeof raw === "string" && /^\s*-?\d+\s*$/.test(raw)) n = Number(raw.trim());
  else n = Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new InvalidValue(
      max >= Number.MAX_SAFE_INTEGER
        ? `must be ${what} of at least ${min}`
        : `must be ${what} from ${min} to ${max}`,
    );
  }
  return n;
}

function path(raw: unknown, ctx: ParseContext): string {
  if (typeof raw !== "string" || raw.trim() === "") throw new InvalidValue("must be a directory path");
  const value = raw === "~" ? ctx.home : raw.startsWith("~/") ? join(ctx.home, raw.slice(2)) : raw;
  return isAbsolute(value) ? resolve(value) : resolve(ctx.baseDir, value);
}

function modelList(raw: unknown): string[] {
  let items: unknown[];
  if (typeof raw === "string") items = raw.split(",");
  else if (Array.isArray(raw)) items = raw.flatMap((v) => (typeof v === "string" ? v.split(",") : [v]));
  else throw new InvalidValue("must be a list of model ids");
  const ids: string[] = [];
  for (const item of items) {
    if (typeof item !== "string") throw new InvalidValue("must be a list of model ids");
    const id = item.trim();
    if (id === "") continue;
    if (!MODEL_ID.test(id)) {
      throw new InvalidValue(
        `must be model ids of 1-128 characters [A-Za-z0-9._:-]; ${JSON.stringify(id)} is not`,
      );
    }
    if (!ids.includes(id)) ids.push(id);
  }
  return ids;
}

function boolean(raw: unknown): boolean {
  if (typeof raw === "boolean") return raw;
  const text = typeof raw === "string" ? raw.trim().toLowerCase() : "";
  if (["true", "1", "yes"].includes(text)) return true;
  if (["false", "0", "no"].includes(text)) return false;
  throw new InvalidValue("must be true or false");
}

function metricsListen(raw: unknown): string {
  if (raw === false) return formatListenAddress(undefined); // `metrics_listen: false` in YAML
  if (typeof raw !== "string") throw new InvalidValue("must be off or HOST:PORT");
  try {
    return formatListenAddress(parseListenAddress(raw));
  } catch (error) {
    if (error instanceof ListenAddressError) throw new InvalidValue(error.message);
    throw error;
  }
}

/** tctildr's TCTI names; the part after ":" is the TCTI's own configuration. */
const TCTI = /^(device|swtpm|mssim|tabrmd|cmd|libtpms)(:.*)?$/;

function tpm(raw: unknown): string {
  if (raw === false) return "off";
  const text = typeof raw === "string" ? raw.trim() : "";
  if (text === "auto" || text === "off" || TCTI.test(text)) return text;
  throw new InvalidValue(
    "must be auto, off, or a TCTI such as device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321",
  );
}

function coordinatorUrl(raw: unknown): string {
  if (typeof raw === "string") {
    try {
      const url = new URL(raw);
      if ((url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "" && !url.search) {
        return url.toString().replace(/\/+$/, "");
      }
    } catch {
      // reported below
    }
  }
  throw new InvalidValue("must be an http:// or https:// URL");
}

export const SETTINGS: { [K in SettingName]: SettingSpec<K> } = {
  coordinatorUrl: {
    name: "coordinatorUrl",
    flag: "--coordinator",
    arg: "<url>",
    env: "DARKBLOOM_COORDINATOR_URL",
    yaml: "coordinator_url",
    description: "coordinator base URL",
    parse: coordinatorUrl,
    default: () => "http://127.0.0.1:8080",
  },
  dataDir: {
    name: "dataDir",
    flag: "--data-dir",
    arg: "<dir>",
    env: "DARKBLOOM_DATA_DIR",
    yaml: "data_dir",
    description: "data directory (models, logs, PID file, keys)",
    parse: path,
    default: (ctx) => defaultDataDir(ctx.home),
  },
  models: {
    name: "models",
    flag: "--model",
    arg: "<id>",
    env: "DARKBLOOM_MODELS",
    yaml: "models",
    description:
      "model to serve, repeatable or comma-separated (default: every model in the models directory)",
    parse: modelList,
    default: () => [],
  },
  kvBits: {
    name: "kvBits",
    flag: "--kv-bits",
    arg: "<bits>",
    env: "DARKBLOOM_KV_BITS",
    yaml: "kv_bits",
    description: "KV-cache quantization, 4 or 8 (default: unquantized)",
    parse: (raw) => {
      const n =
        typeof raw === "number" || (typeof raw === "string" && /^\s*\d+\s*$/.test(raw)) ? Number(raw) : 0;
      if (n !== 4 && n !== 8) throw new InvalidValue("must be 4 or 8");
      return n;
    },
    default: () => undefined,
  },
  maxContext: {
    name: "maxContext",
    flag: "--max-context",
    arg: "<tokens>",
    env: "DARKBLOOM_MAX_CONTEXT",
    yaml: "max_context",
    description:
      "largest prompt + max_tokens accepted (default by memory: <16 GB 20000, <32 GB 50000, <64 GB 120000, else 200000; " +
      "lowered at load to what --max-batch rows of KV cache fit in 60% of memory)",
    parse: (raw) => integer(raw, 1, MAX_CONTEXT_LIMIT),
    default: (ctx) => defaultMaxContext(ctx.totalMemoryBytes),
  },
  maxBatch: {
    name: "maxBatch",
    flag: "--max-batch",
    arg: "<n>",
    env: "DARKBLOOM_MAX_BATCH",
    yaml: "max_batch",
    description: "continuous-batching width (default 4)",
    parse: (raw) => integer(raw, 1, MAX_BATCH_LIMIT),
    default: () => 4,
  },
  idleTimeoutMinutes: {
    name: "idleTimeoutMinutes",
    flag: "--idle-timeout",
    arg: "<minutes>",
    env: "DARKBLOOM_IDLE_TIMEOUT",
    yaml: "idle_timeout_minutes",
    description: "unload a model after this many idle minutes; 0 disables (default 0)",
    parse: (raw) => integer(raw, 0, 525_600),
    default: () => 0,
  },
  threads: {
    name: "threads",
    flag: "--threads",
    arg: "<n>",
    env: "DARKBLOOM_THREADS",
    yaml: "threads",
    description:
      "CPU threads for the engine, or auto: per model, one thread per 64 MiB of weights up to the physical " +
      "cores (default auto)",
    parse: (raw) => {
      if (typeof raw === "string" && raw.trim().toLowerCase() === "auto") return "auto";
      try {
        return integer(raw, 1, 1024);
      } catch (error) {
        if (error instanceof InvalidValue)
          throw new InvalidValue("must be auto or a whole number from 1 to 1024");
        throw error;
      }
    },
    default: () => "auto",
  },
  logLevel: {
    name: "logLevel",
    flag: "--log-level",
    arg: "<level>",
    env: "DARKBLOOM_LOG_LEVEL",
    yaml: "log_level",
    description: `log level: ${LOG_LEVELS.join(", ")} (default info)`,
    parse: (raw) => {
      if (typeof raw !== "string" || !(LOG_LEVELS as readonly string[]).includes(raw)) {
        throw new InvalidValue(`must be one of ${LOG_LEVELS.join(", ")}`);
      }
      return raw as LogLevel;
    },
    default: () => "info",
  },
  heartbeatIntervalMs: {
    name: "heartbeatIntervalMs",
    flag: "--heartbeat-interval",
    arg: "<ms>",
    env: "DARKBLOOM_HEARTBEAT_INTERVAL_MS",
    yaml: "heartbeat_interval_ms",
    description: "heartbeat interval override in ms (default: what the coordinator asks for)",
    parse: (raw) => integer(raw, 100, 600_000),
    default: () => undefined,
  },
  insecure: {
    name: "insecure",
    flag: "--insecure",
    arg: "",
    env: "DARKBLOOM_INSECURE",
    yaml: "insecure",
    description:
      "allow a plain http:// coordinator on another machine (the account token and requests then travel unencrypted)",
    parse: boolean,
    default: () => false,
  },
  metricsListen: {
    name: "metricsListen",
    flag: "--metrics-listen",
    arg: "<host:port|off>",
    env: "DARKBLOOM_METRICS_LISTEN",
    yaml: "metrics_listen",
    description:
      `serve: Prometheus GET /metrics and GET /healthz on this address, or off (default ${DEFAULT_METRICS_LISTEN}; ` +
      "another address than loopback shows this provider's models and load to whoever reaches it)",
    parse: metricsListen,
    default: () => DEFAULT_METRICS_LISTEN,
  },
  tpm: {
    name: "tpm",
    flag: "--tpm",
    arg: "<auto|off|tcti>",
    env: "DARKBLOOM_TPM",
    yaml: "tpm",
    description:
      "Linux: the TPM 2.0 that holds the attestation key (trust tpm): auto (/dev/tpmrm0 when present), off (the software key), or a TCTI (default auto)",
    parse: tpm,
    default: () => "auto",
  },
  allowCpu: {
    name: "allowCpu",
    flag: "--allow-cpu",
    arg: "",
    env: "DARKBLOOM_ALLOW_CPU",
    yaml: "allow_cpu",
    description:
      "serve: join the network even when the engine computes on the CPU (no GPU it can use); refused otherwise",
    parse: boolean,
    default: () => false,
  },
  engine: {
    name: "engine",
    flag: "--engine",
    arg: "<auto|llama|native|mlx>",
    env: "DARKBLOOM_ENGINE",
    yaml: "engine",
    description:
      "inference engine: native (the llama.cpp addon of npm run build:native, CPU), llama (node-llama-cpp), " +
      "mlx (MLX checkpoints, the MLX addon of npm run build:native with DARKBLOOM_MLX_DIR), or auto: mlx " +
      "for MLX checkpoints, native for GGUF files when its addon is built and no GPU is present, else llama " +
      "(default auto)",
    parse: (raw) => {
      const text = typeof raw === "string" ? raw.trim().toLowerCase() : "";
      if (!(ENGINE_CHOICES as readonly string[]).includes(text))
        throw new InvalidValue(`must be one of ${ENGINE_CHOICES.join(", ")}`);
      return text as EngineChoice;
    },
    default: () => "auto",
  },
};

export const SETTING_NAMES = Object.keys(SETTINGS) as SettingName[];

/** The defaults of the machine this runs on. */
export function machineDefaultsContext(env: Readonly<Record<string, string | undefined>>): DefaultsContext {
  return { home: env.HOME || homedir(), totalMemoryBytes: totalmem(), cpuCount: availableParallelism() };
}
