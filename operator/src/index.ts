export * from "./api/index.js";
export { clusterDns, type ServiceResolver } from "./controllers/coordinator-admin.js";
export { type OperatorOptions, type RunningOperator, startOperator } from "./manager.js";
export { LEADER_ELECTION_RULES, OPERATOR_RULES, type PolicyRule } from "./rbac.js";
export { OperatorMetrics } from "./runtime/metrics.js";
