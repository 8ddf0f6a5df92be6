// The operator's API: the darkbloom.dev/v1alpha1 types, their CRDs, the schema builder they use, and
// the Helm chart's values schema generated from them.
export * from "./chart-values-schema.js";
export * from "./schema.js";
export * from "./v1alpha1/common-types.js";
export * from "./v1alpha1/conditions.js";
export * from "./v1alpha1/coordinator-config-types.js";
export * from "./v1alpha1/coordinator-types.js";
export * from "./v1alpha1/crds.js";
export * from "./v1alpha1/group-version.js";
export * from "./v1alpha1/provider-release-types.js";
export * from "./v1alpha1/well-known.js";
