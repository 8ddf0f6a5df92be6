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
}

/** Semantic Versioning 2.0.0, without a leading "v". */
const SEMVER =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/;
/** "darwin-arm64", "linux-x64", "linux-x64-cuda"… */
const PLATFORM = /^[a-z0-9]+(?:-[a-z0-9_]+){1,3}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const MAX_URL_LENGTH = 2048;

const COLUMNS = "version, platform, binary_sha256, bundle_sha256, url, active, created_at";

interface ReleaseRow {
  version: string;
  platform: string;
  binary_sha256: string;
  bundle_sha256: string;
  url: string;
  active: boolean;
  created_at: Date;
}

/** Provider daemon releases in PostgreSQL. */
export class ReleaseStore {
  constructor(private readonly pool: pg.Pool) {}

  async create(input: ReleaseInput): Promise<Release> {
    const release = validate(input);
    const { rows } = await this.pool.query<ReleaseRow>(
      `INSERT INTO releases (version, platform, binary_sha256, bundle_sha256, url, active)
       VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (version, platform) DO NOTHING RETURNING ${COLUMNS}`,
      [
        release.version,
        release.platform,
        release.binarySha256,
        release.bundleSha256,
        release.url,
        release.active,
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

  /** The binary hashes of every active release: the daemon binary allowlist. */
  async activeBinaryHashes(): Promise<Set<string>> {
    const { rows } = await this.pool.query<{ binary_sha256: string }>(
      "SELECT DISTINCT binary_sha256 FROM releases WHERE active",
    );
    return new Set(rows.map((row) => row.binary_sha256));
  }
}

function validate(input: ReleaseInput): Required<ReleaseInput> {
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
  return { ...input, active: input.active ?? true };
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
    createdAt: row.created_at,
  };
}
