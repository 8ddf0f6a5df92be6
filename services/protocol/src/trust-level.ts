import { TrustLevel } from "./gen/darkbloom/provider/v1/provider_pb.js";

/** The names trust levels have on the HTTP API, in headers and in configuration. */
export type TrustLevelName = "none" | "self_signed" | "hardware";

const NAMES: Record<TrustLevel, TrustLevelName> = {
  [TrustLevel.UNSPECIFIED]: "none",
  [TrustLevel.NONE]: "none",
  [TrustLevel.SELF_SIGNED]: "self_signed",
  [TrustLevel.HARDWARE]: "hardware",
};

export function trustLevelName(level: TrustLevel): TrustLevelName {
  return NAMES[level] ?? "none";
}

/** Parses "none" | "self_signed" | "hardware"; returns undefined for anything else. */
export function parseTrustLevelName(name: string): TrustLevel | undefined {
  switch (name) {
    case "none":
      return TrustLevel.NONE;
    case "self_signed":
      return TrustLevel.SELF_SIGNED;
    case "hardware":
      return TrustLevel.HARDWARE;
    default:
      return undefined;
  }
}
