// Test helpers of the operator: a strict fake Kubernetes API server, the rest of a small cluster that
// runs pods as real processes, and the real kubectl/helm binaries. Never imported by production code.
export * from "./apiserver/index.js";
export * from "./cluster/index.js";
export { type KubeTools, kubeTools } from "./kube-tools.js";
export {
  OPERATOR_NAMESPACE,
  OPERATOR_SERVICE_ACCOUNT,
  OPERATOR_USER,
  type OperatorTestEnv,
  startOperatorEnv,
} from "./operator-env.js";
