import type { V1PodDisruptionBudget } from "@kubernetes/client-node";
import type { Coordinator } from "../../../api/v1alpha1/coordinator-types.js";
import { identity, ownedMeta, selectorLabels } from "./labels.js";

/**
 * The replicas' PodDisruptionBudget, or undefined when `spec.disruptionBudget.enabled` is false (the
 * controller then deletes an existing one). Unhealthy pods may always be evicted: a crash-looping
 * replica must not block a node drain.
 */
export function buildPodDisruptionBudget(coordinator: Coordinator): V1PodDisruptionBudget | undefined {
  const budget = coordinator.spec.disruptionBudget;
  if (!budget.enabled) return undefined;
  return {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: ownedMeta(coordinator, identity(coordinator).name),
    spec: {
      maxUnavailable: budget.maxUnavailable,
      selector: { matchLabels: selectorLabels(coordinator) },
      unhealthyPodEvictionPolicy: "AlwaysAllow",
    },
  };
}
