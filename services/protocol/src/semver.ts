/** Semantic Versioning 2.0.0 (no leading "v"); build metadata is ignored for precedence. */
const SEMVER =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/;

export interface SemVer {
  major: bigint;
  minor: bigint;
  patch: bigint;
  prerelease: string[];
}

export function isSemver(version: string): boolean {
  return SEMVER.test(version);
}

export function parseSemver(version: string): SemVer | undefined {
  const m = SEMVER.exec(version);
  if (!m) return undefined;
  return {
    major: BigInt(m[1] ?? "0"),
    minor: BigInt(m[2] ?? "0"),
    patch: BigInt(m[3] ?? "0"),
    prerelease: m[4] ? m[4].split(".") : [],
  };
}

/**
 * Precedence of two versions (semver.org section 11): negative when a < b, 0 when equal, positive
 * when a > b. Throws on a string that is not a semantic version.
 */
export function compareSemver(a: string, b: string): number {
  const x = parseSemver(a);
  const y = parseSemver(b);
  if (!x) throw new RangeError(`"${a}" is not a semantic version`);
  if (!y) throw new RangeError(`"${b}" is not a semantic version`);
  for (const key of ["major", "minor", "patch"] as const) {
    if (x[key] !== y[key]) return x[key] < y[key] ? -1 : 1;
  }
  // A version without a prerelease ranks above the same version with one.
  if (x.prerelease.length === 0 || y.prerelease.length === 0) {
    return y.prerelease.length - x.prerelease.length === 0 ? 0 : x.prerelease.length === 0 ? 1 : -1;
  }
  const n = Math.max(x.prerelease.length, y.prerelease.length);
  for (let i = 0; i < n; i++) {
    const p = x.prerelease[i];
    const q = y.prerelease[i];
    if (p === undefined) return -1;
    if (q === undefined) return 1;
    if (p === q) continue;
    const pNum = /^\d+$/.test(p);
    const qNum = /^\d+$/.test(q);
    if (pNum && qNum) return BigInt(p) < BigInt(q) ? -1 : 1;
    if (pNum) return -1; // numeric identifiers rank below alphanumeric ones
    if (qNum) return 1;
    return p < q ? -1 : 1;
  }
  return 0;
}
