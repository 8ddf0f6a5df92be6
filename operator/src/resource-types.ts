import { COORDINATOR, GROUP, PROVIDER_RELEASE, VERSION } from "./api/v1alpha1/group-version.js";
import type { ResourceType } from "./runtime/kube-api.js";

// Every resource type the operator reads or writes; the RBAC rules (rbac.ts) are checked against
// this list and the requests the tests see it make.

export const COORDINATORS: ResourceType = {
  group: GROUP,
  version: VERSION,
  namespaced: true,
  ...pick(COORDINATOR),
};
export const PROVIDER_RELEASES: ResourceType = {
  group: GROUP,
  version: VERSION,
  namespaced: true,
  ...pick(PROVIDER_RELEASE),
};
export const DEPLOYMENTS: ResourceType = {
  group: "apps",
  version: "v1",
  plural: "deployments",
  kind: "Deployment",
  namespaced: true,
};
export const JOBS: ResourceType = {
  group: "batch",
  version: "v1",
  plural: "jobs",
  kind: "Job",
  namespaced: true,
};
export const SERVICES: ResourceType = {
  group: "",
  version: "v1",
  plural: "services",
  kind: "Service",
  namespaced: true,
};
export const SECRETS: ResourceType = {
  group: "",
  version: "v1",
  plural: "secrets",
  kind: "Secret",
  namespaced: true,
};
export const EVENTS: ResourceType = {
  group: "",
  version: "v1",
  plural: "events",
  kind: "Event",
  namespaced: true,
};
export const POD_DISRUPTION_BUDGETS: ResourceType = {
  group: "policy",
  version: "v1",
  plural: "poddisruptionbudgets",
  kind: "PodDisruptionBudget",
  namespaced: true,
};
export const LEASES: ResourceType = {
  group: "coordination.k8s.io",
  version: "v1",
  plural: "leases",
  kind: "Lease",
  namespaced: true,
};

function pick(names: { plural: string; kind: string }): { plural: string; kind: string } {
  return { plural: names.plural, kind: names.kind };
}
