import type { V1ObjectMeta } from "@kubernetes/client-node";
import { type Infer, s, type ValidationRule } from "../schema.js";
import { conditionsSchema, DNS1035_LABEL_PATTERN, SEMVER_PATTERN } from "./common-types.js";
import type { API_VERSION, PROVIDER_RELEASE } from "./group-version.js";

// A provider daemon release registered with a coordinator's admin API (services/coordinator/src/
// releases/release-store.ts, whose validation the patterns copy). A release is a signed fact about one
// binary: only `active` may change; anything else is a new release, hence a new object.

/** The release store's PLATFORM: "darwin-arm64", "linux-x64", "linux-x64-cuda"… */
const PLATFORM_PATTERN = "^[a-z0-9]+(?:-[a-z0-9_]+){1,3}$";
const SHA256_PATTERN = "^[0-9a-f]{64}$";

/** A transition rule: runs on update only, when the field is in both the old and the new object. */
function immutable(field: string): ValidationRule[] {
  return [{ rule: "self == oldSelf", message: `${field} is immutable: create a new ProviderRelease` }];
}

export const providerReleaseSpecSchema = s.object(
  {
    coordinatorRef: s.object(
      {
        name: s.string({
          description: "Name of the Coordinator.",
          minLength: 1,
          maxLength: 63,
          pattern: DNS1035_LABEL_PATTERN,
        }),
      },
      {
        description: "The Coordinator in the same namespace whose admin API the release is registered with.",
        required: ["name"],
        rules: immutable("coordinatorRef"),
      },
    ),
    version: s.string({
      description: 'The daemon\'s semantic version, without a leading "v" (1.2.3, 1.3.0-rc.1).',
      pattern: `^${SEMVER_PATTERN}$`,
      maxLength: 256,
      rules: immutable("version"),
    }),
    platform: s.string({
      description: "The platform the binary runs on: darwin-arm64, linux-x64, linux-x64-cuda…",
      pattern: PLATFORM_PATTERN,
      maxLength: 64,
      rules: immutable("platform"),
    }),
    binarySha256: s.string({
      description: "SHA-256 of the daemon binary, 64 lowercase hex digits (what attestation reports).",
      pattern: SHA256_PATTERN,
      rules: immutable("binarySha256"),
    }),
    bundleSha256: s.string({
      description: "SHA-256 of the downloadable bundle, 64 lowercase hex digits.",
      pattern: SHA256_PATTERN,
      rules: immutable("bundleSha256"),
    }),
    url: s.string({
      description: "Where providers download the bundle: an https:// (or http://) URL.",
      maxLength: 2048,
      pattern: "^https?://[^\\s/?#]+([/?#][^\\s]*)?$",
      rules: immutable("url"),
    }),
    minProviderVersion: s.string({
      description:
        'While the release is active, daemons older than this semantic version are not routed to ("" for no minimum).',
      pattern: `^(${SEMVER_PATTERN})?$`,
      maxLength: 256,
      default: "",
      rules: immutable("minProviderVersion"),
    }),
    active: s.boolean({
      description: "Whether attestation accepts the binary; set to false to withdraw the release.",
      default: true,
    }),
  },
  {
    description: "A provider daemon release.",
    required: ["coordinatorRef", "version", "platform", "binarySha256", "bundleSha256", "url"],
  },
);

export const providerReleaseStatusSchema = s.object(
  {
    observedGeneration: s.integer({
      description: "The .metadata.generation this status was computed from.",
      format: "int64",
      minimum: 0,
    }),
    conditions: conditionsSchema("The latest observations of the release's registration."),
    registeredAt: s.string({
      description: "When the coordinator first accepted the release.",
      format: "date-time",
    }),
  },
  { description: "The observed state of the release's registration." },
);

export type ProviderReleaseSpec = Infer<typeof providerReleaseSpecSchema>;
export type ProviderReleaseStatus = Infer<typeof providerReleaseStatusSchema>;

/** A ProviderRelease as stored (defaults applied). */
export interface ProviderRelease {
  apiVersion: typeof API_VERSION;
  kind: typeof PROVIDER_RELEASE.kind;
  metadata: V1ObjectMeta;
  spec: ProviderReleaseSpec;
  status?: ProviderReleaseStatus;
}

/** The condition types of a ProviderRelease's status. */
export const ProviderReleaseConditionType = {
  /** The coordinator's release list matches the spec (registered, with the spec's `active`). */
  Synced: "Synced",
  /** The coordinator accepted the release (False: it refused it, and retrying will not help). */
  Accepted: "Accepted",
} as const;
export type ProviderReleaseConditionType =
  (typeof ProviderReleaseConditionType)[keyof typeof ProviderReleaseConditionType];

/** The reasons of a ProviderRelease's conditions. */
export const ProviderReleaseReason = {
  /** Synced: the coordinator holds the release as specified. */
  Synced: "Synced",
  /** Accepted: the release is active (daemons running its binary are routed to), or not. */
  Active: "Active",
  Inactive: "Inactive",
  /** Synced False: the coordinatorRef names no Coordinator in the namespace. */
  CoordinatorNotFound: "CoordinatorNotFound",
  /** Synced False: the Coordinator has no ready replica, or its admin API did not answer (retried). */
  CoordinatorUnavailable: "CoordinatorUnavailable",
  /** Synced False: the Coordinator's admin-key Secret or key is missing, or the coordinator refused it. */
  AdminKeyMissing: "AdminKeyMissing",
  AdminKeyRejected: "AdminKeyRejected",
  /**
   * Synced False: the Coordinator serves TLS and its TLS Secret is missing (the operator trusts its
   * ca.crt), or the coordinator's certificate failed verification (CA, or spec.tls.serverName).
   */
  TLSSecretMissing: "TLSSecretMissing",
  CertificateRejected: "CertificateRejected",
  /** Synced and Accepted False: the coordinator holds this version and platform with other hashes. */
  Conflict: "Conflict",
  /** Synced False: the coordinator refused the release as invalid. */
  Invalid: "Invalid",
  /** Synced False: any other failure of the admin call. */
  CoordinatorError: "CoordinatorError",
} as const;
export type ProviderReleaseReason = (typeof ProviderReleaseReason)[keyof typeof ProviderReleaseReason];
