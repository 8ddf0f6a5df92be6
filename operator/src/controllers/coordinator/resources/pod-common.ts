import type {
  V1LocalObjectReference,
  V1PodSpec,
  V1ResourceRequirements,
  V1SecurityContext,
  V1Volume,
  V1VolumeMount,
} from "@kubernetes/client-node";
import type { Coordinator } from "../../../api/v1alpha1/coordinator-types.js";

// What the coordinator's pods and its migration Job's pods share.

/** The coordinator's data directory: an emptyDir, since all shared state is in PostgreSQL. */
export const DATA_DIR = "/var/lib/darkbloom";
const DATA_VOLUME = "data";

/** The coordinator writes nothing outside its data directory, and needs no privilege. */
export function securityContext(): V1SecurityContext {
  return {
    runAsNonRoot: true,
    runAsUser: 10001,
    // The image's darkbloom group (images/Dockerfile): files the process creates are not root's group.
    runAsGroup: 10001,
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
    capabilities: { drop: ["ALL"] },
    seccompProfile: { type: "RuntimeDefault" },
  };
}

export function dataVolume(): V1Volume {
  return { name: DATA_VOLUME, emptyDir: {} };
}

export function dataVolumeMount(): V1VolumeMount {
  return { name: DATA_VOLUME, mountPath: DATA_DIR };
}

/** `spec.resources`, with integer quantities written as the strings the API returns them as. */
export function resourceRequirements(coordinator: Coordinator): V1ResourceRequirements {
  const { requests, limits } = coordinator.spec.resources ?? {};
  const strings = (quantities: Record<string, number | string>) =>
    Object.fromEntries(Object.entries(quantities).map(([name, value]) => [name, String(value)]));
  return {
    ...(requests ? { requests: strings(requests) } : {}),
    ...(limits ? { limits: strings(limits) } : {}),
  };
}

/** The pod-level settings both kinds of pod take from the spec: registry credentials and placement. */
export function podPlacement(
  coordinator: Coordinator,
): Pick<V1PodSpec, "imagePullSecrets" | "nodeSelector" | "tolerations" | "affinity" | "priorityClassName"> {
  const { imagePullSecrets, scheduling } = coordinator.spec;
  const pullSecrets: V1LocalObjectReference[] | undefined = imagePullSecrets?.map(({ name }) => ({ name }));
  return {
    ...(pullSecrets ? { imagePullSecrets: pullSecrets } : {}),
    ...(scheduling?.nodeSelector ? { nodeSelector: scheduling.nodeSelector } : {}),
    ...(scheduling?.tolerations ? { tolerations: scheduling.tolerations } : {}),
    ...(scheduling?.affinity ? { affinity: scheduling.affinity } : {}),
    ...(scheduling?.priorityClassName ? { priorityClassName: scheduling.priorityClassName } : {}),
  };
}
