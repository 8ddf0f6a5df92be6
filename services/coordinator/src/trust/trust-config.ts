import { isSemver, parseTrustLevelName, TRUST_LEVEL_NAMES } from "@darkbloom/protocol";
import type { CoordinatorConfig } from "../config.js";
import type { TrustManagerOptions } from "./trust-manager.js";

const HEX_P256 = /^04[0-9a-f]{128}$/;

/** The trust manager's options from the coordinator's configuration; throws on an invalid value. */
export function trustOptionsFrom(config: CoordinatorConfig): TrustManagerOptions {
  const minTrust = parseTrustLevelName(config.minTrustLevel);
  if (minTrust === undefined) {
    throw new Error(
      `minTrustLevel must be one of ${TRUST_LEVEL_NAMES.join(", ")}, got ${JSON.stringify(config.minTrustLevel)}`,
    );
  }
  if (config.minProviderVersion !== "" && !isSemver(config.minProviderVersion)) {
    throw new Error(
      `minProviderVersion ${JSON.stringify(config.minProviderVersion)} is not a semantic version`,
    );
  }
  for (const [name, value] of [
    ["challengeIntervalMs", config.challengeIntervalMs],
    ["challengeTimeoutMs", config.challengeTimeoutMs],
    ["challengeRetryMs", config.challengeRetryMs],
    ["challengeFreshnessMs", config.challengeFreshnessMs],
    ["maxFailedChallenges", config.maxFailedChallenges],
    ["releasePolicyRefreshMs", config.releasePolicyRefreshMs],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 1)
      throw new Error(`${name} must be a positive integer, got ${value}`);
  }
  const hardwareKeys = new Set<string>();
  for (const key of config.hardwareKeys) {
    const hex = key.trim().toLowerCase();
    if (!HEX_P256.test(hex)) {
      throw new Error(
        "hardwareKeys entries must be hex SEC1 uncompressed P-256 keys (130 hex digits starting 04)",
      );
    }
    hardwareKeys.add(hex);
  }
  const tpmPcrAllowlist = new Set<string>();
  for (const digest of config.tpmPcrAllowlist) {
    const hex = digest.trim().toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error("tpmPcrAllowlist entries must be 64 hex digits");
    tpmPcrAllowlist.add(hex);
  }
  return {
    minTrust,
    minProviderVersion: config.minProviderVersion,
    hardwareKeys,
    ...(config.tpmEkCaFile === "" ? {} : { ekCaFile: config.tpmEkCaFile }),
    tpmPcrAllowlist,
    challengeIntervalMs: config.challengeIntervalMs,
    challengeTimeoutMs: config.challengeTimeoutMs,
    challengeRetryMs: config.challengeRetryMs,
    challengeFreshnessMs: config.challengeFreshnessMs,
    maxFailedChallenges: config.maxFailedChallenges,
    policyRefreshMs: config.releasePolicyRefreshMs,
  };
}
