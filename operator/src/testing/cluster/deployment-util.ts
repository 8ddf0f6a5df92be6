/**
 * The pure parts of the Deployment controller, ported from pkg/controller/deployment/util: the
 * pod-template-hash, which ReplicaSet is "new", the rolling-update arithmetic (fenceposts, surge,
 * proportional scaling) and the status the controller writes.
 */
import type { Condition, Deployment, PodTemplateSpec, ReplicaSet } from "./types.js";
import {
  canonicalJson,
  fnv32a,
  nowTimestamp,
  parseTime,
  safeEncodeString,
  scaledValue,
  setCondition,
} from "./util.js";

export const HASH_LABEL = "pod-template-hash";
export const REVISION = "deployment.kubernetes.io/revision";
export const DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas";
export const MAX_REPLICAS = "deployment.kubernetes.io/max-replicas";
/** Deployment annotations that are not copied onto its ReplicaSets (annotationsToSkip). */
const SKIPPED_ANNOTATIONS = new Set([
  "kubectl.kubernetes.io/last-applied-configuration",
  REVISION,
  "deployment.kubernetes.io/revision-history",
  DESIRED_REPLICAS,
  MAX_REPLICAS,
  "deprecated.deployment.rollback.to",
]);

export const replicasOf = (d: Deployment): number => d.spec.replicas ?? 1;
export const rsReplicas = (rs: ReplicaSet): number => rs.spec.replicas ?? 1;
const isRolling = (d: Deployment) => d.spec.strategy?.type !== "Recreate";

/** Drops nulls, empty maps and empty lists, so that a round trip through a server cannot tell two templates apart. */
function normalize(value: unknown): unknown {
  if (Array.isArray(value)) return value.length ? value.map(normalize) : undefined;
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const n = normalize(v);
      if (n !== undefined) out[k] = n;
    }
    return Object.keys(out).length ? out : undefined;
  }
  return value === null ? undefined : value;
}

/** controller.ComputeHash: FNV-1a of the template (and the collision count), safe-encoded. */
export function computeHash(template: PodTemplateSpec, collisionCount?: number): string {
  const text =
    canonicalJson(normalize(template)) + (collisionCount === undefined ? "" : `#${collisionCount}`);
  return safeEncodeString(String(fnv32a(text)));
}

/** EqualIgnoreHash: the templates are equal apart from the pod-template-hash label. */
export function equalIgnoreHash(a: PodTemplateSpec, b: PodTemplateSpec): boolean {
  const strip = (t: PodTemplateSpec) => {
    const labels = { ...(t.metadata?.labels ?? {}) };
    delete labels[HASH_LABEL];
    return canonicalJson(normalize({ ...t, metadata: { ...(t.metadata ?? {}), labels } }));
  };
  return strip(a) === strip(b);
}

const created = (rs: ReplicaSet) => parseTime(rs.metadata.creationTimestamp) ?? 0;
export const byCreation = (a: ReplicaSet, b: ReplicaSet) =>
  created(a) - created(b) || (a.metadata.name ?? "").localeCompare(b.metadata.name ?? "");
export const revisionOf = (rs: ReplicaSet): number => Number(rs.metadata.annotations?.[REVISION] ?? 0) || 0;
export const byRevision = (a: ReplicaSet, b: ReplicaSet) => revisionOf(a) - revisionOf(b) || byCreation(a, b);

/** FindNewReplicaSet: the oldest ReplicaSet whose template is the Deployment's. */
export function findNewReplicaSet(d: Deployment, rsList: ReplicaSet[]): ReplicaSet | undefined {
  return [...rsList].sort(byCreation).find((rs) => equalIgnoreHash(rs.spec.template, d.spec.template));
}

export const filterActive = (rss: (ReplicaSet | undefined)[]): ReplicaSet[] =>
  rss.filter((rs): rs is ReplicaSet => rs !== undefined && rsReplicas(rs) > 0);

export const sumSpec = (rss: (ReplicaSet | undefined)[]) =>
  rss.reduce((n, rs) => n + (rs ? rsReplicas(rs) : 0), 0);
export const sumStatus = (
  rss: (ReplicaSet | undefined)[],
  field: "replicas" | "readyReplicas" | "availableReplicas",
) => rss.reduce((n, rs) => n + (rs?.status?.[field] ?? 0), 0);

/** ResolveFenceposts: maxSurge rounds up, maxUnavailable down, and they cannot both be 0. */
export function resolveFenceposts(d: Deployment): { surge: number; unavailable: number } {
  const desired = replicasOf(d);
  const ru = d.spec.strategy?.rollingUpdate;
  const surge = scaledValue(ru?.maxSurge, desired, true, "25%");
  let unavailable = scaledValue(ru?.maxUnavailable, desired, false, "25%");
  if (surge === 0 && unavailable === 0) unavailable = 1;
  return { surge, unavailable };
}

export const maxSurge = (d: Deployment): number => (isRolling(d) ? resolveFenceposts(d).surge : 0);

/** MaxUnavailable: 0 for Recreate or no replicas; never more than the replicas. */
export function maxUnavailable(d: Deployment): number {
  if (!isRolling(d) || replicasOf(d) === 0) return 0;
  return Math.min(resolveFenceposts(d).unavailable, replicasOf(d));
}

/** NewRSNewReplicas: how far the new ReplicaSet may grow now without passing replicas + maxSurge. */
export function newRSNewReplicas(d: Deployment, allRSs: ReplicaSet[], newRS: ReplicaSet): number {
  if (!isRolling(d)) return replicasOf(d);
  const current = sumSpec(allRSs);
  const maxTotal = replicasOf(d) + maxSurge(d);
  if (current >= maxTotal) return rsReplicas(newRS);
  const scaleUp = Math.min(maxTotal - current, replicasOf(d) - rsReplicas(newRS));
  return rsReplicas(newRS) + scaleUp;
}

/** getReplicaSetFraction / GetProportion: a ReplicaSet's share of a scaling step during a rollout. */
export function proportion(rs: ReplicaSet, d: Deployment, toAdd: number, added: number): number {
  if (rsReplicas(rs) === 0 || toAdd === 0 || toAdd === added) return 0;
  let fraction: number;
  if (replicasOf(d) === 0) fraction = -rsReplicas(rs);
  else {
    const deploymentReplicas = replicasOf(d) + maxSurge(d);
    const annotated = Number(rs.metadata.annotations?.[MAX_REPLICAS]);
    const base = Number.isInteger(annotated) && annotated > 0 ? annotated : (d.status?.replicas ?? 0);
    fraction = base === 0 ? 0 : Math.round((rsReplicas(rs) * deploymentReplicas) / base) - rsReplicas(rs);
  }
  const allowed = toAdd - added;
  return toAdd > 0 ? Math.min(fraction, allowed) : Math.max(fraction, allowed);
}

/** SetNewReplicaSetAnnotations: copies the Deployment's annotations and bumps the revision; true if changed. */
export function setNewReplicaSetAnnotations(
  d: Deployment,
  rs: ReplicaSet,
  newRevision: number,
  exists: boolean,
) {
  const annotations = { ...(rs.metadata.annotations ?? {}) };
  let changed = false;
  for (const [k, v] of Object.entries(d.metadata.annotations ?? {})) {
    if (SKIPPED_ANNOTATIONS.has(k) || annotations[k] === v) continue;
    annotations[k] = v;
    changed = true;
  }
  if ((Number(annotations[REVISION] ?? 0) || 0) < newRevision) {
    annotations[REVISION] = String(newRevision);
    changed = true;
  }
  if (!exists) {
    annotations[DESIRED_REPLICAS] = String(replicasOf(d));
    annotations[MAX_REPLICAS] = String(replicasOf(d) + maxSurge(d));
    changed = true;
  }
  rs.metadata.annotations = annotations;
  return changed;
}

export type DeploymentStatus = NonNullable<Deployment["status"]>;

/** calculateStatus: the counts, and the Available condition. */
export function calculateStatus(
  d: Deployment,
  allRSs: ReplicaSet[],
  newRS: ReplicaSet | undefined,
): DeploymentStatus {
  const available = sumStatus(allRSs, "availableReplicas");
  const status: DeploymentStatus = {
    observedGeneration: d.metadata.generation ?? 0,
    replicas: sumStatus(allRSs, "replicas"),
    updatedReplicas: sumStatus([newRS], "replicas"),
    readyReplicas: sumStatus(allRSs, "readyReplicas"),
    availableReplicas: available,
    unavailableReplicas: Math.max(0, sumSpec(allRSs) - available),
    conditions: [...(d.status?.conditions ?? [])],
  };
  if (d.status?.collisionCount !== undefined) status.collisionCount = d.status.collisionCount;
  const cond =
    available >= replicasOf(d) - maxUnavailable(d)
      ? condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
      : condition(
          "Available",
          "False",
          "MinimumReplicasUnavailable",
          "Deployment does not have minimum availability.",
        );
  status.conditions = setCondition(status.conditions ?? [], cond);
  return status;
}

/** The status as the API server would serialize it: zero counts are `omitempty` in apps/v1. */
export function wireStatus(status: DeploymentStatus): DeploymentStatus {
  const out: DeploymentStatus = { ...status };
  for (const k of [
    "observedGeneration",
    "replicas",
    "updatedReplicas",
    "readyReplicas",
    "availableReplicas",
    "unavailableReplicas",
  ] as const) {
    if (out[k] === 0) delete out[k];
  }
  if (out.conditions?.length === 0) delete out.conditions;
  return out;
}

export function condition(
  type: string,
  status: Condition["status"],
  reason: string,
  message: string,
): Condition {
  const now = nowTimestamp();
  return { type, status, lastUpdateTime: now, lastTransitionTime: now, reason, message };
}

export const getCondition = (status: DeploymentStatus | undefined, type: string) =>
  status?.conditions?.find((c) => c.type === type);

/** DeploymentComplete: every replica updated and available, and the newest spec observed. */
export function deploymentComplete(d: Deployment, s: DeploymentStatus): boolean {
  const want = replicasOf(d);
  return (
    (s.updatedReplicas ?? 0) === want &&
    (s.replicas ?? 0) === want &&
    (s.availableReplicas ?? 0) === want &&
    (s.observedGeneration ?? 0) >= (d.metadata.generation ?? 0)
  );
}

/** DeploymentProgressing: more updated, ready or available replicas, or fewer old ones, than last written. */
export function deploymentProgressing(d: Deployment, s: DeploymentStatus): boolean {
  const old = d.status ?? {};
  const oldOld = (old.replicas ?? 0) - (old.updatedReplicas ?? 0);
  const newOld = (s.replicas ?? 0) - (s.updatedReplicas ?? 0);
  return (
    (s.updatedReplicas ?? 0) > (old.updatedReplicas ?? 0) ||
    newOld < oldOld ||
    (s.readyReplicas ?? 0) > (old.readyReplicas ?? 0) ||
    (s.availableReplicas ?? 0) > (old.availableReplicas ?? 0)
  );
}

/** DeploymentTimedOut: no progress for progressDeadlineSeconds since the condition's lastUpdateTime. */
function timedOut(d: Deployment, status: DeploymentStatus): boolean {
  const cond = getCondition(status, "Progressing");
  if (!cond || cond.reason === "NewReplicaSetAvailable") return false;
  if (cond.reason === "ProgressDeadlineExceeded") return true;
  const from = Date.parse(cond.lastUpdateTime ?? "");
  return !Number.isNaN(from) && from + (d.spec.progressDeadlineSeconds ?? 600) * 1000 < Date.now();
}

/** syncRolloutStatus: calculateStatus plus the Progressing condition as the rollout stands. */
export function rolloutStatus(
  d: Deployment,
  allRSs: ReplicaSet[],
  newRS: ReplicaSet | undefined,
): DeploymentStatus {
  const status = calculateStatus(d, allRSs, newRS);
  const current = getCondition(d.status, "Progressing");
  const complete = status.replicas === status.updatedReplicas && current?.reason === "NewReplicaSetAvailable";
  const rsName = newRS?.metadata.name ?? "";
  let conditions = status.conditions ?? [];
  if (!complete && current?.reason !== "ProgressDeadlineExceeded") {
    if (deploymentComplete(d, status)) {
      const msg = `ReplicaSet "${rsName}" has successfully progressed.`;
      conditions = setCondition(conditions, condition("Progressing", "True", "NewReplicaSetAvailable", msg));
    } else if (deploymentProgressing(d, status)) {
      // Progress refreshes lastUpdateTime (where the deadline starts) even with an unchanged reason.
      const msg = newRS ? `ReplicaSet "${rsName}" is progressing.` : "Deployment is progressing.";
      const next = condition("Progressing", "True", "ReplicaSetUpdated", msg);
      if (current?.status === "True" && current.lastTransitionTime)
        next.lastTransitionTime = current.lastTransitionTime;
      conditions = [...conditions.filter((c) => c.type !== "Progressing"), next];
    } else if (timedOut(d, status)) {
      const msg = `ReplicaSet "${rsName}" has timed out progressing.`;
      conditions = setCondition(
        conditions,
        condition("Progressing", "False", "ProgressDeadlineExceeded", msg),
      );
    }
  }
  status.conditions = conditions;
  return status;
}

/** requeueStuckDeployment: when to look again, to report a missed progress deadline. */
export function stuckRequeueMs(d: Deployment, status: DeploymentStatus): number | undefined {
  const cond = getCondition(status, "Progressing");
  if (!cond || deploymentComplete(d, status)) return undefined;
  if (["ProgressDeadlineExceeded", "DeploymentPaused", "NewReplicaSetAvailable"].includes(cond.reason ?? ""))
    return undefined;
  const from = Date.parse(cond.lastUpdateTime ?? "");
  if (Number.isNaN(from)) return undefined;
  return Math.max(100, from + (d.spec.progressDeadlineSeconds ?? 600) * 1000 - Date.now() + 1000);
}
