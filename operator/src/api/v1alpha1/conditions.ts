import type { Condition, ConditionStatus } from "./common-types.js";

export type { Condition, ConditionStatus };

/** What a reconcile decides about one condition; the time and generation are filled in. */
export interface ConditionInput {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
}

/** A metav1.Time: RFC 3339 in UTC with whole seconds, as the API server writes it. */
export function toKubeTime(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * The conditions with `input` set: replaced in place when its type exists, appended otherwise.
 * `lastTransitionTime` moves only when the status changes, so a reconcile that finds nothing new
 * produces conditions equal to the ones it read, and writes no status.
 */
export function setCondition(
  conditions: readonly Condition[] | undefined,
  input: ConditionInput,
  generation: number | undefined,
  now: Date,
): Condition[] {
  const list = conditions ?? [];
  const previous = list.find((c) => c.type === input.type);
  const next: Condition = {
    type: input.type,
    status: input.status,
    reason: input.reason,
    message: input.message,
    lastTransitionTime:
      previous && previous.status === input.status ? previous.lastTransitionTime : toKubeTime(now),
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
  };
  return previous ? list.map((c) => (c === previous ? next : c)) : [...list, next];
}

/** The condition of that type, if any. */
export function findCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

/** Whether the condition of that type is present and True. */
export function isTrue(conditions: readonly Condition[] | undefined, type: string): boolean {
  return findCondition(conditions, type)?.status === "True";
}
