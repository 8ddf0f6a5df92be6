import { compareSemver } from "@darkbloom/protocol";
import type pg from "pg";
import { InvalidArgumentError } from "../store/errors.js";
import { ReleaseAlreadyExistsError, ReleaseNotFoundError } from "./errors.js";

/** A registered provider daemon release; active releases' binary hashes form the allowlist. */
export interface Release {
  version: string;
  platform: string;
  binarySha256: string;
  bundleSha256: string;
  url: string;
  active: boolean;
  /** While active, daemons older than this are not routed to ("" for no minimum). */
  minProviderVersion: string;
  createdAt: Date;
}

export interface ReleaseInput {
  version: string;
  platform: string;
  binarySha256: string;
  bundleSha256: string;
  url: string;
  /** Defaults to true: a registered release is allowed at once. */
  active?: boolean;
  /** Defaults to "" (no minimum). */
  minProviderVersion?: string;
}

/** What the active releases impose on the connected fleet. */
export interface ReleasePolicy {
  /** The binary hashes of every active release (empty: no allowlist, any binary is accepted). */
  binaryAllowlist: Set<string>;
  /** The highest min_provider_version of the active releases ("" when none sets one). */
  minProviderVersion: string;
}

/** Semantic Versioning 2.0.0, without a leading "v". */
const SEMVER =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/;
/** "darwin-arm64", "linux-x64", "linux-x64-cuda"… */
const PLATFORM = /^[a-z0-9]+(?:-[a-z0-9_]+){1,3}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const MAX_URL_LENGTH = 2048;

const COLUMNS =
  "version, platform, binary_sha256, bundle_sha256, url, active, min_provider_version, created_at";

interface ReleaseRow {
  version: string;
  platform: string;
  binary_sha256: string;
  bundle_sha256: string;
  url: string;
  active: boolean;
  min_provider_version: string;
  created_at: Date;
}

/** Provider daemon releases in PostgreSQL. */
export class ReleaseStore {
  constructor(private readonly pool: pg.Pool) {}

  async create(input: ReleaseInput): Promise<Release> {
    const release = validate(input);
    const { rows } = await this.pool.query<ReleaseRow>(
      `INSERT INTO releases (version, platform, binary_sha256, bundle_sha256, url, active, min_provider_version)
       VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (version, platform) DO NOTHING RETURNING ${COLUMNS}`,
      [
        release.version,
        release.platform,
        release.binarySha256,
        release.bundleSha256,
        release.url,
        release.active,
        release.minProviderVersion,
      ],
    );
    const row = rows[0];
    if (row === undefined) throw new ReleaseAlreadyExistsError(release.version, release.platform);
    return toRelease(row);
  }

  /** Releases, newest first, optionally for one platform. */
  async list(filter: { platform?: string } = {}): Promise<Release[]> {
    const { rows } = await this.pool.query<ReleaseRow>(
      `SELECT ${COLUMNS} FROM releases WHERE $1::text IS NULL OR platform = $1
        ORDER BY created_at DESC, version DESC, platform`,
      [filter.platform || null],
    );
    return rows.map(toRelease);
  }

  async setActive(version: string, platform: string, active: boolean): Promise<Release> {
    const { rows } = await this.pool.query<ReleaseRow>(
      `UPDATE releases SET active = $3 WHERE version = $1 AND platform = $2 RETURNING ${COLUMNS}`,
      [version, platform, active],
    );
    const row = rows[0];
    if (row === undefined) throw new ReleaseNotFoundError(version, platform);
    return toRelease(row);
  }

  /**
   * The newest active release for a platform by semantic-version precedence (the latest registered
   * among equal versions); undefined when the platform has none.
   */
  async latest(platform: string): Promise<Release | undefined> {
    const { rows } = await this.pool.query<ReleaseRow>(
      `SELECT ${COLUMNS} FROM releases WHERE active AND platform = $1 ORDER BY created_at DESC`,
      [platform],
    );
    let best: Release | undefined;
    for (const row of rows.map(toRelease)) {
      if (best === undefined || compareSemver(row.version, best.version) > 0) best = row;
    }
    return best;
  }

  /** The allowlist and minimum version that the active releases impose. */
  async policy(): Promise<ReleasePolicy> {
    const { rows } = await this.pool.query<{ binary_sha256: string; min_provider_version: string }>(
      "SELECT binary_sha256, min_provider_version FROM releases WHERE active",
    );
    let minProviderVersion = "";
    for (const row of rows) {
      const v = row.min_provider_version;
      if (v !== "" && (minProviderVersion === "" || compareSemver(v, minProviderVersion) > 0)) {
        minProviderVersion = v;
      }
    }
    return { binaryAllowlist: new Set(rows.map((r) => r.binary_sha256)), minProviderVersion };
  }

  /** The binary hashes of every active release: the daemon binary allowlist. */
  async activeBinaryHashes(): Promise<Set<string>> {
    const { rows } = await this.pool.query<{ binary_sha256: string }>(
      "SELECT DISTINCT binary_sha256 FROM releases WHERE active",
    );
    return new Set(rows.map((row) => row.binary_sha256));
  }
}

function validate(input: ReleaseInput): Required<ReleaseInput> {
  const minProviderVersion = input.minProviderVersion ?? "";
  if (minProviderVersion !== "" && !SEMVER.test(minProviderVersion)) {
    throw new InvalidArgumentError(
      "min_provider_version",
      `min_provider_version "${minProviderVersion}" is not a semantic version such as 1.2.3 (or empty)`,
    );
  }
  if (!SEMVER.test(input.version)) {
    throw new InvalidArgumentError(
      "version",
      `version "${input.version}" is not a semantic version such as 1.2.3`,
    );
  }
  if (!PLATFORM.test(input.platform)) {
    throw new InvalidArgumentError(
      "platform",
      `platform "${input.platform}" must look like darwin-arm64 or linux-x64 (lowercase os-arch)`,
    );
  }
  for (const [field, value] of [
    ["binary_sha256", input.binarySha256],
    ["bundle_sha256", input.bundleSha256],
  ] as const) {
    if (!SHA256_HEX.test(value)) {
      throw new InvalidArgumentError(field, `${field} must be 64 lowercase hexadecimal characters`);
    }
  }
  if (!isHttpUrl(input.url)) {
    throw new InvalidArgumentError("url", "url must be an http or https URL");
  }
  return { ...input, active: input.active ?? true, minProviderVersion };
}

function isHttpUrl(value: string): boolean {
  if (value.length > MAX_URL_LENGTH) return false;
  try {
    const url = new URL(value);
    return (url.protocol === "https:" || url.protocol === "http:") && url.hostname !== "";
  } catch {
    return false;
  }
}

function toRelease(row: ReleaseRow): Release {
  return {
    version: row.version,
    platform: row.platform,
    binarySha256: row.binary_sha256,
    bundleSha256: row.bundle_sha256,
    url: row.url,
    active: row.active,
    minProviderVersion: row.min_provider_version,
    createdAt: row.created_at,
  };
}
