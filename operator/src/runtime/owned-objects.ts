import type { KubeApi, KubeObject, ResourceType } from "./kube-api.js";

export type WriteOutcome = "created" | "updated" | "unchanged";

/**
 * True when every field `desired` sets has the same value in `actual`. The API server adds defaults
 * and fields of its own (a Service's clusterIP, a pod template's terminationMessagePath), so the
 * operator's objects are compared on the fields it sets: a reconcile after convergence finds nothing
 * to change and writes nothing. Lists compare element by element and must have the same length (the
 * operator owns each list it sets whole: removing an environment variable must reach the object).
 */
export function isSubset(desired: unknown, actual: unknown): boolean {
  if (desired === undefined) return true;
  if (desired === null || typeof desired !== "object") return desired === actual;
  if (Array.isArray(desired)) {
    return (
      Array.isArray(actual) &&
      actual.length === desired.length &&
      desired.every((item, i) => isSubset(item, actual[i]))
    );
  }
  if (actual === null || typeof actual !== "object" || Array.isArray(actual)) return false;
  const record = actual as Record<string, unknown>;
  return Object.entries(desired).every(([key, value]) => isSubset(value, record[key]));
}

/**
 * Brings one object the operator owns to its desired state: creates it when absent, replaces the
 * fields the operator sets when they differ (keeping labels, annotations and fields others added,
 * and the server-assigned ones `keep` names), writes nothing when they match. The update carries
 * the resourceVersion `current` was read at: a concurrent change fails it with 409, and the
 * reconcile runs again on fresh data instead of overwriting.
 */
export async function applyOwned<T extends KubeObject>(
  api: KubeApi,
  type: ResourceType,
  desired: T,
  current: T | undefined,
  keep: (current: T, next: T) => T = (_current, next) => next,
): Promise<WriteOutcome> {
  if (current === undefined) {
    await api.create(type, desired);
    return "created";
  }
  // List items come without apiVersion and kind (watch events carry them): compare the rest.
  const { apiVersion: _v, kind: _k, ...compared } = desired;
  if (isSubset(compared, current)) return "unchanged";
  const {
    apiVersion,
    kind,
    metadata,
    status: _status,
    ...body
  } = desired as KubeObject & { status?: unknown };
  const next = {
    ...current,
    ...body,
    apiVersion,
    kind,
    metadata: {
      ...current.metadata,
      labels: { ...current.metadata?.labels, ...metadata?.labels },
      annotations: { ...current.metadata?.annotations, ...metadata?.annotations },
      ownerReferences: metadata?.ownerReferences ?? current.metadata?.ownerReferences,
    },
  } as T;
  await api.update(type, keep(current, next));
  return "updated";
}
