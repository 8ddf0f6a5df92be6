import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConfigError, type ConfigInputs, resolveConfig } from "./config.js";
import { defaultMaxContext, SETTINGS, type SettingName } from "./settings.js";

const GIB = 1024 ** 3;

let home: string;
let yamlPath: string;

beforeEach(() => {
  home = mkdtempSync(join(tmpdir(), "darkbloom-config-"));
  mkdirSync(join(home, ".config", "darkbloom"), { recursive: true });
  yamlPath = join(home, ".config", "darkbloom", "provider.yaml");
});

afterEach(() => {
  rmSync(home, { recursive: true, force: true });
});

function resolve(inputs: ConfigInputs = {}) {
  return resolveConfig({
    env: {},
    cwd: home,
    ...inputs,
    defaults: { home, totalMemoryBytes: 16 * GIB, cpuCount: 6, ...inputs.defaults },
  });
}

function writeYaml(text: string, path = yamlPath): void {
  writeFileSync(path, text);
}

function failure(inputs: ConfigInputs): string {
  try {
    resolve(inputs);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error("expected a ConfigError");
}

/** A valid value of each setting per source, and how it reads back. */
const SAMPLES: Record<
  SettingName,
  { flag: string; env: string; yaml: string; expected: [unknown, unknown, unknown] }
> = {
  coordinatorUrl: {
    flag: "http://flag.example:1",
    env: "http://env.example:2",
    yaml: "https://yaml.example:3/",
    expected: ["http://flag.example:1", "http://env.example:2", "https://yaml.example:3"],
  },
  dataDir: {
    flag: "/srv/flag",
    env: "/srv/env",
    yaml: "/srv/yaml",
    expected: ["/srv/flag", "/srv/env", "/srv/yaml"],
  },
  models: { flag: "a", env: "b,c", yaml: "[d, e]", expected: [["a"], ["b", "c"], ["d", "e"]] },
  kvBits: { flag: "4", env: "8", yaml: "4", expected: [4, 8, 4] },
  maxContext: { flag: "1000", env: "2000", yaml: "3000", expected: [1000, 2000, 3000] },
  maxBatch: { flag: "2", env: "3", yaml: "5", expected: [2, 3, 5] },
  idleTimeoutMinutes: { flag: "0", env: "10", yaml: "20", expected: [0, 10, 20] },
  threads: { flag: "1", env: "auto", yaml: "3", expected: [1, "auto", 3] },
  logLevel: { flag: "debug", env: "warn", yaml: "error", expected: ["debug", "warn", "error"] },
  heartbeatIntervalMs: { flag: "250", env: "500", yaml: "750", expected: [250, 500, 750] },
  insecure: { flag: "true", env: "false", yaml: "true", expected: [true, false, true] },
  metricsListen: {
    flag: "0.0.0.0:9100",
    env: "off",
    yaml: '"[::1]:9200"',
    expected: ["0.0.0.0:9100", "off", "[::1]:9200"],
  },
  tpm: {
    flag: "swtpm:host=127.0.0.1,port=2321",
    env: "off",
    yaml: "device:/dev/tpm0",
    expected: ["swtpm:host=127.0.0.1,port=2321", "off", "device:/dev/tpm0"],
  },
  allowCpu: { flag: "true", env: "false", yaml: "true", expected: [true, false, true] },
  engine: { flag: "mlx", env: "native", yaml: "llama", expected: ["mlx", "native", "llama"] },
};

describe("precedence", () => {
  for (const [name, sample] of Object.entries(SAMPLES) as [SettingName, (typeof SAMPLES)[SettingName]][]) {
    const spec = SETTINGS[name];
    it(`${name}: flag > env > yaml > default`, () => {
      const flag = name === "models" ? [sample.flag] : sample.flag;
      writeYaml(`${spec.yaml}: ${sample.yaml}\n`);
      const env = { [spec.env]: sample.env };

      const all = resolve({ flags: { [name]: flag }, env });
      expect(all.config[name]).toEqual(sample.expected[0]);
      expect(all.sources[name]).toEqual({ kind: "flag", flag: spec.flag });

      const envOnly = resolve({ env });
      expect(envOnly.config[name]).toEqual(sample.expected[1]);
      expect(envOnly.sources[name]).toEqual({ kind: "env", variable: spec.env });

      const yamlOnly = resolve();
      expect(yamlOnly.config[name]).toEqual(sample.expected[2]);
      expect(yamlOnly.sources[name]).toEqual({ kind: "file", path: yamlPath, key: spec.yaml });

      rmSync(yamlPath);
      const none = resolve();
      expect(none.sources[name]).toEqual({ kind: "default" });
    });
  }

  it("has these defaults", () => {
    const { config } = resolve();
    expect(config).toEqual({
      coordinatorUrl: "http://127.0.0.1:8080",
      dataDir: join(home, ".darkbloom", "provider"),
      modelsDir: join(home, ".darkbloom", "provider", "models"),
      logFile: join(home, ".darkbloom", "provider", "logs", "provider.log"),
      models: [],
      kvBits: undefined,
      maxContext: 50_000,
      maxBatch: 4,
      idleTimeoutMinutes: 0,
      threads: "auto",
      logLevel: "info",
      heartbeatIntervalMs: undefined,
      insecure: false,
      metricsListen: "127.0.0.1:9464",
      tpm: "auto",
      allowCpu: false,
      engine: "auto",
      configFile: undefined,
    });
  });

  it("defaults max context by memory tier", () => {
    expect(defaultMaxContext(8 * GIB)).toBe(20_000);
    expect(defaultMaxContext(15.4 * GIB)).toBe(20_000);
    expect(defaultMaxContext(15.7 * GIB)).toBe(50_000); // a 16 GB machine reporting a little less
    expect(defaultMaxContext(24 * GIB)).toBe(50_000);
    expect(defaultMaxContext(32 * GIB)).toBe(120_000);
    expect(defaultMaxContext(48 * GIB)).toBe(120_000);
    expect(defaultMaxContext(64 * GIB)).toBe(200_000);
    expect(defaultMaxContext(192 * GIB)).toBe(200_000);
    expect(resolve({ defaults: { totalMemoryBytes: 8 * GIB } }).config.maxContext).toBe(20_000);
    expect(resolve({ defaults: { totalMemoryBytes: 128 * GIB } }).config.maxContext).toBe(200_000);
  });

  it("an empty environment variable counts as unset", () => {
    writeYaml("max_batch: 7\n");
    expect(resolve({ env: { DARKBLOOM_MAX_BATCH: "" } }).config.maxBatch).toBe(7);
  });

  it("--config names another YAML file; DARKBLOOM_CONFIG too, below the flag", () => {
    const other = join(home, "other.yaml");
    writeYaml("max_batch: 9\n", other);
    writeYaml("max_batch: 2\n");
    expect(resolve({ configPath: other }).config.maxBatch).toBe(9);
    expect(resolve({ configPath: other }).config.configFile).toBe(other);
    expect(resolve({ env: { DARKBLOOM_CONFIG: other } }).config.maxBatch).toBe(9);
    expect(resolve({ configPath: "other.yaml" }).config.maxBatch).toBe(9); // relative to cwd
    expect(resolve().config.maxBatch).toBe(2);
  });

  it("resolves relative and ~ paths against the cwd (flags, env) or the YAML file's directory", () => {
    writeYaml("data_dir: state\n");
    expect(resolve().config.dataDir).toBe(join(home, ".config", "darkbloom", "state"));
    expect(resolve({ flags: { dataDir: "here" } }).config.dataDir).toBe(join(home, "here"));
    expect(resolve({ env: { DARKBLOOM_DATA_DIR: "~/x" } }).config.dataDir).toBe(join(home, "x"));
    expect(resolve({ flags: { dataDir: "/abs" } }).config.modelsDir).toBe("/abs/models");
  });

  it("accepts an empty YAML file and null values", () => {
    writeYaml("");
    expect(resolve().config.maxBatch).toBe(4);
    writeYaml("kv_bits:\nmax_batch: 3\n");
    expect(resolve().config.kvBits).toBeUndefined();
    expect(resolve().config.maxBatch).toBe(3);
  });
});

describe("preflight", () => {
  const cases: [string, ConfigInputs | (() => ConfigInputs), string][] = [
    ["--kv-bits 7", { flags: { kvBits: "7" } }, "--kv-bits must be 4 or 8 (got 7 from the command line)"],
    [
      "DARKBLOOM_KV_BITS=16",
      { env: { DARKBLOOM_KV_BITS: "16" } },
      "DARKBLOOM_KV_BITS must be 4 or 8 (got 16 from the environment)",
    ],
    [
      "--max-batch 0",
      { flags: { maxBatch: "0" } },
      "--max-batch must be a whole number from 1 to 4096 (got 0 from the command line)",
    ],
    [
      "--max-batch 5000",
      { flags: { maxBatch: "5000" } },
      "--max-batch must be a whole number from 1 to 4096 (got 5000 from the command line)",
    ],
    [
      "--max-context 0",
      { flags: { maxContext: "0" } },
      "--max-context must be a whole number from 1 to 10000000 (got 0 from the command line)",
    ],
    [
      "--max-context 1.5",
      { flags: { maxContext: "1.5" } },
      "--max-context must be a whole number from 1 to 10000000 (got 1.5 from the command line)",
    ],
    [
      "--idle-timeout -1",
      { flags: { idleTimeoutMinutes: "-1" } },
      "--idle-timeout must be a whole number from 0 to 525600 (got -1 from the command line)",
    ],
    [
      "--threads abc",
      { flags: { threads: "abc" } },
      "--threads must be auto or a whole number from 1 to 1024 (got abc from the command line)",
    ],
    [
      "--threads 0",
      { flags: { threads: "0" } },
      "--threads must be auto or a whole number from 1 to 1024 (got 0 from the command line)",
    ],
    [
      "DARKBLOOM_THREADS=2.5",
      { env: { DARKBLOOM_THREADS: "2.5" } },
      "DARKBLOOM_THREADS must be auto or a whole number from 1 to 1024 (got 2.5 from the environment)",
    ],
    [
      "--log-level loud",
      { flags: { logLevel: "loud" } },
      "--log-level must be one of fatal, error, warn, info, debug, trace, silent (got loud from the command line)",
    ],
    [
      "DARKBLOOM_ENGINE=metal",
      { env: { DARKBLOOM_ENGINE: "metal" } },
      "DARKBLOOM_ENGINE must be one of auto, llama, native, mlx (got metal from the environment)",
    ],
    [
      "--heartbeat-interval 10",
      { flags: { heartbeatIntervalMs: "10" } },
      "--heartbeat-interval must be a whole number from 100 to 600000 (got 10 from the command line)",
    ],
    [
      "--coordinator ftp://x",
      { flags: { coordinatorUrl: "ftp://x" } },
      "--coordinator must be an http:// or https:// URL (got ftp://x from the command line)",
    ],
    [
      "--model with a space",
      { flags: { models: ["good", "bad id"] } },
      '--model must be model ids of 1-128 characters [A-Za-z0-9._:-]; "bad id" is not (got good,"bad id" from the command line)',
    ],
    [
      "--metrics-listen 9464 (no host)",
      { flags: { metricsListen: "9464" } },
      "--metrics-listen must be off or HOST:PORT (HOST an IP address or localhost, IPv6 in brackets; PORT 0 to 65535) (got 9464 from the command line)",
    ],
    [
      "--metrics-listen with a host name",
      { flags: { metricsListen: "metrics.example:9464" } },
      "--metrics-listen must be off or HOST:PORT (HOST an IP address or localhost, IPv6 in brackets; PORT 0 to 65535) (got metrics.example:9464 from the command line)",
    ],
    [
      "DARKBLOOM_METRICS_LISTEN with port 70000",
      { env: { DARKBLOOM_METRICS_LISTEN: "127.0.0.1:70000" } },
      "DARKBLOOM_METRICS_LISTEN must have a port from 0 to 65535 (got 127.0.0.1:70000 from the environment)",
    ],
    [
      "--metrics-listen [nonsense]:1",
      { flags: { metricsListen: "[nonsense]:1" } },
      "--metrics-listen must have an IPv6 address in brackets (got [nonsense]:1 from the command line)",
    ],
    [
      "--tpm with a name tctildr does not know",
      { flags: { tpm: "/dev/tpm0" } },
      "--tpm must be auto, off, or a TCTI such as device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321 (got /dev/tpm0 from the command line)",
    ],
    [
      "--data-dir empty",
      { flags: { dataDir: " " } },
      '--data-dir must be a directory path (got " " from the command line)',
    ],
  ];
  for (const [title, inputs, message] of cases) {
    it(`rejects ${title}`, () => {
      expect(failure(typeof inputs === "function" ? inputs() : inputs)).toBe(message);
    });
  }

  it("names the YAML key and file for a bad YAML value", () => {
    writeYaml("max_batch: 0\n");
    expect(failure({})).toBe(`max_batch must be a whole number from 1 to 4096 (got 0 from ${yamlPath})`);
    writeYaml("kv_bits: seven\n");
    expect(failure({})).toBe(`kv_bits must be 4 or 8 (got seven from ${yamlPath})`);
    writeYaml("models: 3\n");
    expect(failure({})).toBe(`models must be a list of model ids (got 3 from ${yamlPath})`);
  });

  it("a valid flag hides an invalid lower-precedence value", () => {
    writeYaml("kv_bits: 7\n");
    expect(resolve({ flags: { kvBits: "8" } }).config.kvBits).toBe(8);
  });

  it("rejects unknown YAML keys", () => {
    writeYaml("max_batch: 2\nkvbits: 4\n");
    expect(failure({})).toMatch(
      /^unknown setting "kvbits" in .*provider\.yaml \(known: coordinator_url, data_dir, /,
    );
  });

  it("rejects a YAML file that is not a mapping or not YAML", () => {
    writeYaml("- a\n- b\n");
    expect(failure({})).toBe(`${yamlPath} must be a mapping of settings (key: value)`);
    writeYaml("max_batch: [1\n");
    expect(failure({})).toMatch(new RegExp(`^${yamlPath.replace(/[.]/g, "\\.")} is not valid YAML`));
    writeYaml("max_batch: 1\nmax_batch: 2\n");
    expect(failure({})).toMatch(/is not valid YAML/);
  });

  it("rejects a --config file that does not exist", () => {
    expect(failure({ configPath: "/nonexistent/provider.yaml" })).toBe(
      "--config /nonexistent/provider.yaml does not exist",
    );
    expect(failure({ env: { DARKBLOOM_CONFIG: "/nonexistent/p.yaml" } })).toBe(
      "DARKBLOOM_CONFIG /nonexistent/p.yaml does not exist",
    );
  });
});
