import type { V1Deployment } from "@kubernetes/client-node";
import type { Condition } from "../../api/v1alpha1/common-types.js";
import { findCondition, setCondition } from "../../api/v1alpha1/conditions.js";
import {
  type Coordinator,
  type CoordinatorStatus,
  CoordinatorReason as Reason,
  CoordinatorConditionType as Type,
} from "../../api/v1alpha1/coordinator-types.js";
import type { EventType } from "../../runtime/events.js";
import { selectorLabels } from "./resources/labels.js";

/** Where the migration of the spec's image stands. */
export type MigrationState =
  | { state: "none" }
  | { state: "running"; image: string; job: string }
  | { state: "succeeded"; image: string; database: string }
  | { state: "failed"; image: string; job: string; message: string };

/** What one reconcile found: the status is computed from this alone. */
export interface Observed {
  /** Something a person must fix before anything runs (a missing Secret, an invalid spec). */
  problem: { reason: string; message: string } | undefined;
  migration: MigrationState;
  /** The Deployment as the cache holds it (undefined while absent or just written). */
  deployment?: V1Deployment | undefined;
  /** The Deployment was just created or changed: it is rolling out. */
  deploymentPending?: boolean;
}

interface StatusEvent {
  type: EventType;
  reason: string;
  message: string;
}

/**
 * The next status of a Coordinator and the events its transitions deserve. Conditions keep their
 * lastTransitionTime while their status holds, so a reconcile that observes nothing new computes the
 * status it read, and nothing is written.
 */
export function nextStatus(
  coordinator: Coordinator,
  observed: Observed,
  now: Date,
): { status: CoordinatorStatus; events: StatusEvent[] } {
  const previous = coordinator.status ?? {};
  const generation = coordinator.metadata.generation ?? 0;
  const desired = coordinator.spec.replicas;
  const deployment = observed.deployment;
  const counts = deployment?.status ?? {};
  const replicas = counts.replicas ?? 0;
  const ready = counts.readyReplicas ?? 0;
  const updated = counts.updatedReplicas ?? 0;
  const available = counts.availableReplicas ?? 0;
  const deploymentImage = deployment?.spec?.template.spec?.containers[0]?.image;
  const rolledOut =
    deployment !== undefined && !observed.deploymentPending && deploymentRolledOut(deployment, desired);
  const stalled = deployment?.status?.conditions?.find(
    (c) => c.type === "Progressing" && c.status === "False" && c.reason === "ProgressDeadlineExceeded",
  );

  const status: CoordinatorStatus = {
    ...previous,
    observedGeneration: generation,
    replicas,
    readyReplicas: ready,
    updatedReplicas: updated,
    selector: Object.entries(selectorLabels(coordinator))
      .map(([key, value]) => `${key}=${value}`)
      .join(","),
  };
  if (observed.migration.state === "succeeded") {
    status.migratedImage = observed.migration.image;
    status.migratedDatabase = observed.migration.database;
  }
  if (rolledOut && deploymentImage !== undefined) status.currentImage = deploymentImage;

  let conditions: Condition[] = previous.conditions ?? [];
  const set = (type: string, value: "True" | "False", reason: string, message: string) => {
    conditions = setCondition(conditions, { type, status: value, reason, message }, generation, now);
  };
  const migration = observed.migration;
  switch (migration.state) {
    case "succeeded":
      set(
        Type.Migrated,
        "True",
        Reason.MigrationSucceeded,
        `the database schema is migrated for ${migration.image}`,
      );
      break;
    case "running":
      set(
        Type.Migrated,
        "False",
        Reason.MigrationRunning,
        `Job ${migration.job} is migrating the database for ${migration.image}`,
      );
      break;
    case "failed":
      set(Type.Migrated, "False", Reason.MigrationFailed, migration.message);
      break;
    case "none":
      if (findCondition(conditions, Type.Migrated) === undefined) {
        set(
          Type.Migrated,
          "False",
          Reason.MigrationPending,
          "waiting for the Coordinator's Secrets before migrating",
        );
      }
  }

  const degraded = observed.problem
    ? observed.problem
    : migration.state === "failed"
      ? { reason: Reason.MigrationFailed, message: migration.message }
      : stalled
        ? {
            reason: Reason.RolloutStalled,
            message: stalled.message ?? "the rollout exceeded its progress deadline",
          }
        : undefined;
  if (degraded) set(Type.Degraded, "True", degraded.reason, degraded.message);
  else set(Type.Degraded, "False", Reason.AsExpected, "nothing needs attention");

  if (desired === 0) set(Type.Available, "False", Reason.ScaledToZero, "scaled to zero replicas");
  else if (available > 0)
    set(Type.Available, "True", Reason.ReplicasReady, `${available} of ${desired} replicas available`);
  else set(Type.Available, "False", Reason.ReplicasUnavailable, `none of ${desired} replicas is available`);

  const progressing =
    migration.state === "running"
      ? {
          reason: Reason.MigrationRunning,
          message: `migrating the database for ${migration.image} before rolling out`,
        }
      : !rolledOut && !observed.problem
        ? {
            reason: Reason.RollingOut,
            message: `${updated} of ${desired} replicas updated, ${available} available`,
          }
        : undefined;
  if (progressing) set(Type.Progressing, "True", progressing.reason, progressing.message);
  else set(Type.Progressing, "False", Reason.RolledOut, "the replicas run the current specification");

  const current = rolledOut && migration.state === "succeeded" && deploymentImage === coordinator.spec.image;
  if (degraded) set(Type.Ready, "False", degraded.reason, degraded.message);
  else if (current) {
    set(
      Type.Ready,
      "True",
      desired === 0 ? Reason.ScaledToZero : Reason.ReplicasReady,
      `${ready} of ${desired} replicas ready on ${deploymentImage}`,
    );
  } else {
    set(Type.Ready, "False", progressing?.reason ?? Reason.RollingOut, progressing?.message ?? "rolling out");
  }
  status.conditions = conditions;
  return { status, events: transitions(previous.conditions ?? [], conditions) };
}

/**
 * Whether the Deployment's controller has seen its current spec and every one of the `desired`
 * replicas runs that pod template and is available (old pods are gone).
 */
export function deploymentRolledOut(deployment: V1Deployment, desired: number): boolean {
  const counts = deployment.status ?? {};
  return (
    (counts.observedGeneration ?? 0) >= (deployment.metadata?.generation ?? 0) &&
    (counts.updatedReplicas ?? 0) === desired &&
    (counts.replicas ?? 0) === desired &&
    (counts.availableReplicas ?? 0) === desired
  );
}

/** Events for conditions that changed status: Degraded raised (a warning) and Ready reached. */
function transitions(before: readonly Condition[], after: readonly Condition[]): StatusEvent[] {
  const events: StatusEvent[] = [];
  const was = (type: string) => findCondition(before, type)?.status;
  const now = (type: string) => findCondition(after, type);
  const degraded = now(Type.Degraded);
  if (
    degraded?.status === "True" &&
    (was(Type.Degraded) !== "True" || findCondition(before, Type.Degraded)?.reason !== degraded.reason)
  ) {
    events.push({ type: "Warning", reason: degraded.reason, message: degraded.message });
  }
  const ready = now(Type.Ready);
  if (ready?.status === "True" && was(Type.Ready) !== "True") {
    events.push({ type: "Normal", reason: "Ready", message: ready.message });
  }
  return events;
}
