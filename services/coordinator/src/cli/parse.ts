import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { TRUST_LEVEL_NAMES } from "@darkbloom/protocol";
import { InvalidArgumentError } from "commander";
import { UsageError } from "./io.js";

const MAX_INT64 = 2n ** 63n - 1n;

/** A commander argument parser for a non-negative integer amount of micro-USD (int64). */
export function microUsd(value: string): bigint {
  if (!/^\d+$/.test(value) || BigInt(value) > MAX_INT64) {
    throw new InvalidArgumentError("expected a whole number of micro-USD (0 or more, no sign or decimals)");
  }
  return BigInt(value);
}

/** A commander argument parser for a strictly positive amount of micro-USD. */
export function positiveMicroUsd(value: string): bigint {
  const amount = microUsd(value);
  if (amount === 0n) throw new InvalidArgumentError("expected an amount greater than 0");
  return amount;
}

/** A commander argument parser for a TCP port (0 picks a free one). */
export function port(value: string): number {
  const parsed = /^\d{1,5}$/.test(value) ? Number(value) : Number.NaN;
  if (!(parsed >= 0 && parsed <= 65_535)) throw new InvalidArgumentError("expected a port from 0 to 65535");
  return parsed;
}

/** A parser for a yes-or-no environment variable: `true` or `false`, nothing looser. */
export function booleanValue(value: string): boolean {
  if (value === "true") return true;
  if (value === "false") return false;
  throw new InvalidArgumentError("expected true or false");
}

/** A commander argument parser for a positive integer no larger than `max`. */
export function positiveInteger(max: number): (value: string) => number {
  return (value) => {
    const parsed = /^\d+$/.test(value) ? Number(value) : Number.NaN;
    if (!(parsed >= 1 && parsed <= max))
      throw new InvalidArgumentError(`expected a whole number from 1 to ${max}`);
    return parsed;
  };
}

const DURATION_UNITS_MS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** A commander argument parser for a duration such as 500ms, 90s, 30m, 12h or 7d, in milliseconds. */
export function duration(value: string): number {
  const match = /^(\d{1,9})(ms|s|m|h|d)$/.exec(value);
  const ms = match ? Number(match[1]) * DURATION_UNITS_MS[match[2]!]! : 0;
  if (!(ms > 0)) throw new InvalidArgumentError("expected a duration such as 500ms, 90s, 30m, 12h or 7d");
  return ms;
}

/** A commander argument parser for a whole number from 0 to `max`. */
export function wholeNumber(max: number): (value: string) => number {
  return (value) => {
    const parsed = /^\d+$/.test(value) ? Number(value) : Number.NaN;
    if (!(parsed >= 0 && parsed <= max))
      throw new InvalidArgumentError(`expected a whole number from 0 to ${max}`);
    return parsed;
  };
}

/** A commander argument parser for an ISO 8601 date and time, e.g. 2030-01-31T12:00:00Z. */
export function isoTime(value: string): Date {
  const date = /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2})?)?$/.test(value) ? new Date(value) : undefined;
  if (!date || Number.isNaN(date.getTime())) {
    throw new InvalidArgumentError("expected an ISO 8601 time such as 2030-01-31T12:00:00Z");
  }
  return date;
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** A commander argument parser for a pino log level. */
export function logLevel(value: string): string {
  if (!LOG_LEVELS.includes(value)) throw new InvalidArgumentError(`expected one of ${LOG_LEVELS.join(", ")}`);
  return value;
}

/** A commander argument parser for an http:// or https:// URL. */
export function httpUrl(value: string): string {
  if (!isUrl(value, ["http:", "https:"]))
    throw new InvalidArgumentError("expected an http:// or https:// URL");
  return value;
}

/** A commander argument parser for a postgres:// or postgresql:// connection URL. */
export function databaseUrl(value: string): string {
  if (!isUrl(value, ["postgres:", "postgresql:"])) {
    throw new InvalidArgumentError("expected a postgres:// or postgresql:// URL");
  }
  return value;
}

/** The coordinator's data directory: DARKBLOOM_DATA_DIR or ~/.darkbloom/coordinator. */
export function defaultDataDir(env: Readonly<Record<string, string | undefined>>): string {
  return resolve(env.DARKBLOOM_DATA_DIR || join(env.HOME || homedir(), ".darkbloom", "coordinator"));
}

/**
 * Applies `parse` to an environment variable, reporting a bad value as a usage problem of that
 * variable; undefined when it is unset or empty.
 */
export function fromEnv<T>(
  env: Readonly<Record<string, string | undefined>>,
  name: string,
  parse: (value: string) => T,
): T | undefined {
  const value = env[name];
  if (value === undefined || value === "") return undefined;
  try {
    return parse(value);
  } catch (error) {
    // The value is not echoed: variables such as DATABASE_URL carry credentials.
    throw new UsageError(`environment variable ${name} is invalid: ${(error as Error).message}`);
  }
}

function isUrl(value: string, protocols: readonly string[]): boolean {
  try {
    const url = new URL(value);
    return protocols.includes(url.protocol) && url.hostname !== "";
  } catch {
    return false;
  }
}

const TRUST_LEVELS = TRUST_LEVEL_NAMES;

/** A commander argument parser for a trust level name. */
export function trustLevel(value: string): (typeof TRUST_LEVELS)[number] {
  if (!(TRUST_LEVELS as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`expected one of ${TRUST_LEVELS.join(", ")}`);
  }
  return value as (typeof TRUST_LEVELS)[number];
}

const SCHEMA_MODES = ["migrate", "check"] as const;

/** A commander argument parser for `--schema`: apply pending migrations, or only check for them. */
export function schemaMode(value: string): (typeof SCHEMA_MODES)[number] {
  if (!(SCHEMA_MODES as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`expected one of ${SCHEMA_MODES.join(", ")}`);
  }
  return value as (typeof SCHEMA_MODES)[number];
}

const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;

/** A commander argument parser for a semantic version such as 1.2.3. */
export function semver(value: string): string {
  if (!SEMVER.test(value)) throw new InvalidArgumentError("expected a semantic version such as 1.2.3");
  return value;
}

/** A commander argument parser for hex SEC1 P-256 public keys, comma-separated; repeatable. */
export function hardwareKeys(value: string, previous: string[] = []): string[] {
  const keys = value
    .split(",")
    .map((k) => k.trim().toLowerCase())
    .filter((k) => k !== "");
  for (const key of keys) {
    if (!/^04[0-9a-f]{128}$/.test(key)) {
      throw new InvalidArgumentError("expected hex SEC1 P-256 public keys (130 hex digits starting 04)");
    }
  }
  return [...previous, ...keys];
}

/** A commander argument parser for hex SHA-256 PCR digests, comma-separated; repeatable. */
export function pcrDigests(value: string, previous: string[] = []): string[] {
  const digests = value
    .split(",")
    .map((k) => k.trim().toLowerCase())
    .filter((k) => k !== "");
  for (const digest of digests) {
    if (!/^[0-9a-f]{64}$/.test(digest)) {
      throw new InvalidArgumentError("expected hex SHA-256 PCR digests (64 hex digits)");
    }
  }
  return [...previous, ...digests];
}

const SIZE_UNITS: Record<string, number> = { "": 1, B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };

/** A commander argument parser for a size in bytes such as 65536, 512KiB, 1MiB or 2GiB, from 1 to `max`. */
export function byteSize(max: number): (value: string) => number {
  return (value) => {
    const match = /^(\d{1,13})(B|KiB|MiB|GiB)?$/.exec(value);
    const bytes = match ? Number(match[1]) * (SIZE_UNITS[match[2] ?? ""] ?? Number.NaN) : Number.NaN;
    if (!(bytes >= 1 && bytes <= max))
      throw new InvalidArgumentError(`expected a size from 1 byte to ${max} such as 65536, 512KiB or 1MiB`);
    return bytes;
  };
}

/** `--embedding-min-dimensions`: a positive integer, or none (0 on the wire: only the model's own length). */
export function embeddingDimensions(value: string): number {
  if (value === "none") return 0;
  if (!/^[1-9][0-9]{0,4}$/.test(value) || Number(value) > 65_536) {
    throw new InvalidArgumentError("expected a positive integer (at most 65536) or none");
  }
  return Number(value);
}
