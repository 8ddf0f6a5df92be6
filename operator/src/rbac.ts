import { GROUP } from "./api/v1alpha1/group-version.js";

/** A PolicyRule of a Role or ClusterRole. */
export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

const READ = ["get", "list", "watch"];

/**
 * What the operator may do anywhere it manages Coordinators (least privilege: each verb is one its
 * code sends, which the tests check against the requests it makes under an enforcing authorizer).
 * The Helm chart renders these rules into its ClusterRole.
 */
export const OPERATOR_RULES: readonly PolicyRule[] = [
  { apiGroups: [GROUP], resources: ["coordinators", "providerreleases"], verbs: [...READ, "update"] },
  {
    apiGroups: [GROUP],
    resources: ["coordinators/status", "providerreleases/status"],
    verbs: ["get", "update"],
  },
  // Owner references with blockOwnerDeletion need update on the owner's finalizers subresource
  // where the OwnerReferencesPermissionEnforcement admission plugin is on.
  {
    apiGroups: [GROUP],
    resources: ["coordinators/finalizers", "providerreleases/finalizers"],
    verbs: ["update"],
  },
  { apiGroups: ["apps"], resources: ["deployments"], verbs: [...READ, "create", "update"] },
  { apiGroups: ["batch"], resources: ["jobs"], verbs: [...READ, "create", "delete"] },
  { apiGroups: [""], resources: ["services"], verbs: [...READ, "create", "update"] },
  {
    apiGroups: ["policy"],
    resources: ["poddisruptionbudgets"],
    verbs: [...READ, "create", "update", "delete"],
  },
  // Coordinators reference the platform team's Secrets; the peer Secret is the operator's own
  // (update: a peer token rotation rewrites it).
  { apiGroups: [""], resources: ["secrets"], verbs: [...READ, "create", "update"] },
  { apiGroups: [""], resources: ["events"], verbs: ["create", "patch"] },
];

/** What the operator may do in its own namespace: hold the leader Lease. */
export const LEADER_ELECTION_RULES: readonly PolicyRule[] = [
  { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "create", "update"] },
  { apiGroups: [""], resources: ["events"], verbs: ["create", "patch"] },
];
