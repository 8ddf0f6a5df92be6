import { join } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import type { CoordinatorConfig } from "../config.js";
import { ensureDataDir } from "../store/data-dir.js";
import { readOrCreateSecretFile } from "../store/secret-file.js";
import { UsageError } from "./io.js";
import { fromEnv, port, positiveInteger, wholeNumber } from "./parse.js";

// Who may read /metrics, how failed credentials are limited, and which proxies are believed: the
// flags and environment variables of `serve` (the flag wins), with CoordinatorConfig's defaults.

type AccessKey = keyof Pick<
  CoordinatorConfig,
  | "metricsToken"
  | "metricsPort"
  | "metricsHost"
  | "metricsMaxModels"
  | "authFailuresPerSecond"
  | "authFailureBurst"
  | "authFailureAddresses"
  | "trustProxyHops"
  | "peerToken"
  | "previousPeerToken"
>;

interface AccessOption<K extends AccessKey = AccessKey> {
  key: K;
  flag: string;
  env: string;
  arg: string;
  description: string;
  parse: (value: string) => NonNullable<CoordinatorConfig[K]>;
}

/** A bearer token: printable, no spaces, long enough not to be guessed. */
function token(value: string): string {
  if (!/^[\x21-\x7e]{16,256}$/.test(value)) {
    throw new InvalidArgumentError("expected 16 to 256 printable characters without spaces");
  }
  return value;
}

function host(value: string): string {
  if (!/^[A-Za-z0-9.:_-]{1,253}$/.test(value))
    throw new InvalidArgumentError("expected a host name or address");
  return value;
}

const ACCESS: readonly AccessOption[] = [
  {
    key: "peerToken",
    flag: "--peer-token",
    env: "DARKBLOOM_PEER_TOKEN",
    arg: "<token>",
    description:
      "the credential coordinator replicas forward requests to each other with, the same on every " +
      "replica (default: none: this replica serves only its own providers and refuses peers)",
    parse: token,
  },
  {
    key: "previousPeerToken",
    flag: "--previous-peer-token",
    env: "DARKBLOOM_PREVIOUS_PEER_TOKEN",
    arg: "<token>",
    description:
      "the peer token being rotated out: accepted beside --peer-token and sent to replicas that " +
      "know only it, while a rotation rolls through the replicas (drop it once all run the new one)",
    parse: token,
  },
  {
    key: "metricsToken",
    flag: "--metrics-token",
    env: "DARKBLOOM_METRICS_TOKEN",
    arg: "<token>",
    description:
      "bearer token GET /metrics requires (default: generated in <data dir>/metrics.token; " +
      "with --metrics-port and no token, the metrics port needs none)",
    parse: token,
  },
  {
    key: "metricsPort",
    flag: "--metrics-port",
    env: "DARKBLOOM_METRICS_PORT",
    arg: "<port>",
    description: "serve /metrics on this port instead of the main one (default: the main port)",
    parse: port,
  },
  {
    key: "metricsHost",
    flag: "--metrics-host",
    env: "DARKBLOOM_METRICS_HOST",
    arg: "<host>",
    description: "listen address of --metrics-port (default 127.0.0.1)",
    parse: host,
  },
  {
    key: "metricsMaxModels",
    flag: "--metrics-max-models",
    env: "DARKBLOOM_METRICS_MAX_MODELS",
    arg: "<n>",
    description: 'distinct model labels in the metrics; other models count as "other" (default 256)',
    parse: positiveInteger(10_000),
  },
  {
    key: "authFailuresPerSecond",
    flag: "--auth-failure-rate",
    env: "DARKBLOOM_AUTH_FAILURE_RATE",
    arg: "<per-second>",
    description:
      "failed API-key, admin-key or metrics-token checks a client address earns back per second, 0 for no limit (default 1)",
    parse: wholeNumber(1_000_000),
  },
  {
    key: "authFailureBurst",
    flag: "--auth-failure-burst",
    env: "DARKBLOOM_AUTH_FAILURE_BURST",
    arg: "<n>",
    description: "failed credential checks a client address may make in a burst before 429 (default 20)",
    parse: positiveInteger(1_000_000),
  },
  {
    key: "authFailureAddresses",
    flag: "--auth-failure-addresses",
    env: "DARKBLOOM_AUTH_FAILURE_ADDRESSES",
    arg: "<n>",
    description: "client addresses the failed-auth limiter remembers at once (default 100000)",
    parse: positiveInteger(10_000_000),
  },
  {
    key: "trustProxyHops",
    flag: "--trust-proxy",
    env: "DARKBLOOM_TRUST_PROXY",
    arg: "<hops>",
    description:
      "proxies in front that append X-Forwarded-For; per-address limits then count the client they name (default 0: the header is ignored)",
    parse: wholeNumber(10),
  },
];

/** Adds the access flags to `serve`. */
export function addAccessOptions(command: Command): Command {
  for (const o of ACCESS) {
    const option = new Option(`${o.flag} ${o.arg}`, `${o.description} (env ${o.env})`);
    // A secret is checked in accessFrom, whose message does not quote it (commander's would).
    command.addOption(SECRETS.has(o.key) ? option : option.argParser(o.parse));
  }
  return command;
}

export type AccessConfig = Partial<Pick<CoordinatorConfig, AccessKey>>;

/** Options holding a secret: checked in accessFrom, whose message does not quote the value. */
const SECRETS: ReadonlySet<AccessKey> = new Set(["metricsToken", "peerToken", "previousPeerToken"]);

/** The access settings given by flag or environment; absent ones keep CoordinatorConfig's defaults. */
export function accessFrom(
  opts: Readonly<Record<string, unknown>>,
  env: Readonly<Record<string, string | undefined>>,
): AccessConfig {
  const given: Record<string, unknown> = {};
  for (const o of ACCESS) {
    let value = opts[new Option(o.flag).attributeName()];
    if (SECRETS.has(o.key) && typeof value === "string") {
      try {
        value = o.parse(value);
      } catch (error) {
        throw new UsageError(`${o.flag} is invalid: ${(error as Error).message}`);
      }
    }
    const resolved = value !== undefined ? value : fromEnv(env, o.env, o.parse);
    if (resolved !== undefined) given[o.key] = resolved;
  }
  const access = given as AccessConfig;
  // A previous token alone would accept peers that this replica never calls; one equal to the
  // current token is a rotation that rotated nothing (most likely the two values were swapped).
  if (access.previousPeerToken !== undefined) {
    if (access.peerToken === undefined) {
      throw new UsageError(
        "--previous-peer-token (DARKBLOOM_PREVIOUS_PEER_TOKEN) needs --peer-token (DARKBLOOM_PEER_TOKEN)",
      );
    }
    if (access.previousPeerToken === access.peerToken) {
      throw new UsageError("--previous-peer-token must differ from --peer-token");
    }
  }
  return access;
}

export const METRICS_TOKEN_FILE = "metrics.token";

/**
 * The token /metrics needs. Given: that one. Not given and /metrics on the main port (the one
 * consumers reach): one kept in `<dataDir>/metrics.token` (0600), generated on first use, so the
 * public port never serves metrics to anyone. Not given and a metrics port: none, as that port's
 * reach (loopback by default) is its access control.
 */
export async function metricsTokenFor(
  access: AccessConfig,
  dataDir: string,
): Promise<{ token: string | undefined; file: string | undefined }> {
  if (access.metricsToken !== undefined) return { token: access.metricsToken, file: undefined };
  if (access.metricsPort !== undefined) return { token: undefined, file: undefined };
  await ensureDataDir(dataDir);
  const file = join(dataDir, METRICS_TOKEN_FILE);
  return { token: await readOrCreateSecretFile(file), file };
}
