// The fake API server's CustomResourceDefinition engine: compileCrd checks a CRD as the real
// kube-apiserver does and compiles each served version into pruning, defaulting, validation (OpenAPI
// and CEL x-kubernetes-validations), printer columns and scale paths.

export { compileCrd } from "./compile.js";
export type * from "./types.js";
