import { TrustLevel } from "./gen/darkbloom/provider/v1/provider_pb.js";

/** The names trust levels have on the HTTP API, in headers and in configuration, lowest first. */
export const TRUST_LEVEL_NAMES = ["none", "self_signed", "tpm", "hardware"] as const;
export type TrustLevelName = (typeof TRUST_LEVEL_NAMES)[number];

const NAMES: Record<TrustLevel, TrustLevelName> = {
  [TrustLevel.UNSPECIFIED]: "none",
  [TrustLevel.NONE]: "none",
  [TrustLevel.SELF_SIGNED]: "self_signed",
  [TrustLevel.TPM]: "tpm",
  [TrustLevel.HARDWARE]: "hardware",
};

const LEVELS: Record<TrustLevelName, TrustLevel> = {
  none: TrustLevel.NONE,
  self_signed: TrustLevel.SELF_SIGNED,
  tpm: TrustLevel.TPM,
  hardware: TrustLevel.HARDWARE,
};

export function trustLevelName(level: TrustLevel): TrustLevelName {
  return NAMES[level] ?? "none";
}

/**
 * The order of trust levels: none 0 < self_signed 1 < tpm 2 < hardware 3. The enum's numbers are not
 * that order (TRUST_LEVEL_TPM = 4 came after HARDWARE = 3, and wire numbers never change), so every
 * comparison of levels goes through this; unknown numbers rank as none.
 */
export function trustRank(level: TrustLevel): number {
  return TRUST_LEVEL_NAMES.indexOf(trustLevelName(level));
}

/** Parses a trust level name (TRUST_LEVEL_NAMES); returns undefined for anything else. */
export function parseTrustLevelName(name: string): TrustLevel | undefined {
  return Object.hasOwn(LEVELS, name) ? LEVELS[name as TrustLevelName] : undefined;
}
