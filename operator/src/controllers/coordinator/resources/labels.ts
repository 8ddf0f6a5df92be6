import type { V1ObjectMeta, V1OwnerReference } from "@kubernetes/client-node";
import type { Coordinator } from "../../../api/v1alpha1/coordinator-types.js";
import { API_VERSION, COORDINATOR } from "../../../api/v1alpha1/group-version.js";
import {
  LABEL_COMPONENT,
  LABEL_INSTANCE,
  LABEL_MANAGED_BY,
  LABEL_NAME,
} from "../../../api/v1alpha1/well-known.js";

export const APP_NAME = "darkbloom-coordinator";
export const MANAGED_BY = "darkbloom-operator";

/** The serving replicas (and their Service, budget and Secret), or the database migration Jobs. */
export type Component = "coordinator" | "migration";

/** The stored Coordinator's identity; an object built before it is stored could not be owned. */
export function identity(coordinator: Coordinator): { name: string; namespace: string; uid: string } {
  const { name, namespace, uid } = coordinator.metadata;
  if (!name || !namespace || !uid) {
    throw new Error("a Coordinator needs metadata.name, namespace and uid: build from the stored object");
  }
  return { name, namespace, uid };
}

/**
 * What selects the serving pods. The component is part of it: the migration Job's pods carry the
 * same name and instance, and must never receive traffic or count in the disruption budget.
 */
export function selectorLabels(coordinator: Coordinator): Record<string, string> {
  return {
    [LABEL_NAME]: APP_NAME,
    [LABEL_INSTANCE]: identity(coordinator).name,
    [LABEL_COMPONENT]: "coordinator",
  };
}

/** The labels of every object the operator makes for a Coordinator. */
export function labels(
  coordinator: Coordinator,
  component: Component = "coordinator",
): Record<string, string> {
  return {
    [LABEL_NAME]: APP_NAME,
    [LABEL_INSTANCE]: identity(coordinator).name,
    [LABEL_COMPONENT]: component,
    [LABEL_MANAGED_BY]: MANAGED_BY,
  };
}

/** The Coordinator as the controlling owner: its deletion collects the object. */
export function ownerReference(coordinator: Coordinator): V1OwnerReference {
  const { name, uid } = identity(coordinator);
  return {
    apiVersion: API_VERSION,
    kind: COORDINATOR.kind,
    name,
    uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** Name, namespace, labels and owner of an object made for the Coordinator. */
export function ownedMeta(
  coordinator: Coordinator,
  name: string,
  component: Component = "coordinator",
): V1ObjectMeta {
  return {
    name,
    namespace: identity(coordinator).namespace,
    labels: labels(coordinator, component),
    ownerReferences: [ownerReference(coordinator)],
  };
}
