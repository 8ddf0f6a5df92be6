// The API group and version of the operator's custom resources, and their names.

export const GROUP = "darkbloom.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}` as const;

/** Every resource of the group is listed by `kubectl get darkbloom`. */
export const CATEGORIES = ["darkbloom"];

export const COORDINATOR = {
  kind: "Coordinator",
  listKind: "CoordinatorList",
  plural: "coordinators",
  singular: "coordinator",
  shortNames: ["dbc"],
} as const;

export const PROVIDER_RELEASE = {
  kind: "ProviderRelease",
  listKind: "ProviderReleaseList",
  plural: "providerreleases",
  singular: "providerrelease",
  shortNames: ["dbrel"],
} as const;
