/** Helpers shared by the fake cluster's controllers, each a port of the apimachinery function it names. */
import { randomInt } from "node:crypto";
import type { Condition, IntOrString, KubeObject, LabelSelector, OwnerReference, Pod } from "./types.js";

/** Timestamps as the API server serializes metav1.Time: RFC 3339, whole seconds. */
export const nowTimestamp = (ms = Date.now()): string => `${new Date(ms).toISOString().slice(0, 19)}Z`;

export const parseTime = (t: string | undefined): number | undefined => (t ? Date.parse(t) : undefined);

/** The alphabet of utilrand.String: no vowels (no words) and no look-alike characters. */
const ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789";

/** utilrand.String(n): the suffix of generated names such as `<replicaset>-x7k2p`. */
export function randomSuffix(n = 5): string {
  let s = "";
  for (let i = 0; i < n; i++) s += ALPHANUMS[randomInt(ALPHANUMS.length)];
  return s;
}

/** utilrand.SafeEncodeString: maps each byte of the input onto the alphabet above. */
export function safeEncodeString(s: string): string {
  let out = "";
  for (let i = 0; i < s.length; i++) out += ALPHANUMS[s.charCodeAt(i) % ALPHANUMS.length];
  return out;
}

/** 32-bit FNV-1a, the hash behind the pod-template-hash label. */
export function fnv32a(s: string): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(s, "utf8")) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** JSON with object keys sorted, so that equal values give equal strings (and equal hashes). */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

export const deepEqual = (a: unknown, b: unknown): boolean => canonicalJson(a) === canonicalJson(b);

export const clone = <T>(value: T): T => structuredClone(value);

/** metav1.LabelSelectorAsSelector(...).Matches: an empty selector matches everything. */
export function selectorMatches(
  selector: LabelSelector | undefined,
  labels: Record<string, string> | undefined,
): boolean {
  if (!selector) return false;
  const have = labels ?? {};
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (have[k] !== v) return false;
  for (const req of selector.matchExpressions ?? []) {
    const value = have[req.key];
    const present = Object.hasOwn(have, req.key);
    switch (req.operator) {
      case "In":
        if (!present || !(req.values ?? []).includes(value as string)) return false;
        break;
      case "NotIn":
        if (present && (req.values ?? []).includes(value as string)) return false;
        break;
      case "Exists":
        if (!present) return false;
        break;
      case "DoesNotExist":
        if (present) return false;
        break;
    }
  }
  return true;
}

/** Labels-map selectors (Service.spec.selector): every pair must match; an empty map selects nothing here. */
export function mapSelectorMatches(
  selector: Record<string, string>,
  labels: Record<string, string> | undefined,
) {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

export const controllerRef = (obj: KubeObject): OwnerReference | undefined =>
  obj.metadata.ownerReferences?.find((r) => r.controller === true);

export function ownerRefFor(owner: KubeObject, apiVersion: string, kind: string): OwnerReference {
  return {
    apiVersion,
    kind,
    name: owner.metadata.name ?? "",
    uid: owner.metadata.uid ?? "",
    controller: true,
    blockOwnerDeletion: true,
  };
}

/**
 * intstr.GetScaledValueFromIntOrPercent: an int as is, or "N%" of total, rounded up or down. Rounding
 * as the Deployment controller does it: maxSurge rounds up, maxUnavailable down.
 */
export function scaledValue(
  value: IntOrString | undefined,
  total: number,
  roundUp: boolean,
  dflt: IntOrString,
) {
  const v = value ?? dflt;
  if (typeof v === "number") return v;
  const match = /^(\d+)%$/.exec(v);
  if (!match) {
    const n = Number(v);
    if (Number.isInteger(n)) return n;
    throw new Error(`invalid value for IntOrString: ${v}`);
  }
  const scaled = (Number(match[1]) * total) / 100;
  return roundUp ? Math.ceil(scaled) : Math.floor(scaled);
}

/**
 * Sets a condition the way the controllers' SetCondition helpers do: lastTransitionTime changes only
 * when the status changes; an unchanged status and reason leaves the condition as it was.
 */
export function setCondition(conditions: Condition[], next: Condition): Condition[] {
  const current = conditions.find((c) => c.type === next.type);
  if (current && current.status === next.status && current.reason === next.reason) return conditions;
  const merged: Condition = { ...next };
  if (current && current.status === next.status && current.lastTransitionTime) {
    merged.lastTransitionTime = current.lastTransitionTime;
  }
  return [...conditions.filter((c) => c.type !== next.type), merged];
}

/** Drops zero counts, as Go's `omitempty` does for the status fields that carry it. */
export function omitZero<T extends Record<string, unknown>>(obj: T, keys: (keyof T)[]): T {
  const out = { ...obj };
  for (const k of keys) if (out[k] === 0) delete out[k];
  return out;
}

export const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

// ---- pods, as controller/podutil sees them ---------------------------------------------------------

/** Pods that count towards a controller's replicas: not finished and not being deleted. */
export const isPodActive = (pod: Pod): boolean =>
  pod.status?.phase !== "Succeeded" && pod.status?.phase !== "Failed" && !pod.metadata.deletionTimestamp;

export const podReadyCondition = (pod: Pod) => pod.status?.conditions?.find((c) => c.type === "Ready");

export const isPodReady = (pod: Pod): boolean => podReadyCondition(pod)?.status === "True";

/** podutil.IsPodAvailable: ready, and ready for at least minReadySeconds. */
export function isPodAvailable(pod: Pod, minReadySeconds: number, now = Date.now()): boolean {
  const ready = podReadyCondition(pod);
  if (ready?.status !== "True") return false;
  if (minReadySeconds === 0) return true;
  const since = parseTime(ready.lastTransitionTime);
  return since !== undefined && since + minReadySeconds * 1000 < now;
}

/** When a ready pod that is not yet available becomes available (for a timed resync). */
export function availableAt(pod: Pod, minReadySeconds: number): number | undefined {
  const ready = podReadyCondition(pod);
  if (ready?.status !== "True") return undefined;
  const since = parseTime(ready.lastTransitionTime);
  return since === undefined ? undefined : since + minReadySeconds * 1000 + 1;
}

const PHASE_RANK: Record<string, number> = { Pending: 0, Unknown: 1, Running: 2 };

/**
 * controller.ActivePodsWithRanks: the order in which a controller scales pods down, the first ones
 * first: unscheduled, then pending, not ready, lower deletion cost, ready for less time, more restarts,
 * and newer pods before older ones.
 */
export function compareForDeletion(a: Pod, b: Pod): number {
  const assigned = (p: Pod) => (p.spec.nodeName ? 1 : 0);
  if (assigned(a) !== assigned(b)) return assigned(a) - assigned(b);
  const phase = (p: Pod) => PHASE_RANK[p.status?.phase ?? "Pending"] ?? 0;
  if (phase(a) !== phase(b)) return phase(a) - phase(b);
  const ready = (p: Pod) => (isPodReady(p) ? 1 : 0);
  if (ready(a) !== ready(b)) return ready(a) - ready(b);
  const cost = (p: Pod) =>
    Number(p.metadata.annotations?.["controller.kubernetes.io/pod-deletion-cost"] ?? 0) || 0;
  if (cost(a) !== cost(b)) return cost(a) - cost(b);
  if (isPodReady(a) && isPodReady(b)) {
    const since = (p: Pod) => parseTime(podReadyCondition(p)?.lastTransitionTime) ?? 0;
    if (since(a) !== since(b)) return since(b) - since(a);
  }
  const restarts = (p: Pod) =>
    (p.status?.containerStatuses ?? []).reduce((n, c) => Math.max(n, c.restartCount), 0);
  if (restarts(a) !== restarts(b)) return restarts(b) - restarts(a);
  const created = (p: Pod) => parseTime(p.metadata.creationTimestamp) ?? 0;
  return created(b) - created(a);
}
