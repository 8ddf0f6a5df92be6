import { getDotted, type JsonObject, meta, stringMap } from "./json.js";
import type { ResourceInfo } from "./resources.js";
import { badRequest } from "./status-errors.js";

type Requirement =
  | { key: string; op: "exists" | "!exists" }
  | { key: string; op: "=" | "!="; value: string }
  | { key: string; op: "in" | "notin"; values: string[] }
  | { key: string; op: ">" | "<"; value: number };

export type LabelSelector = (labels: Record<string, string>) => boolean;

/** Splits on commas that are not inside a parenthesised value set. */
function splitTopLevel(selector: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = "";
  for (const ch of selector) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      parts.push(current);
      current = "";
    } else current += ch;
  }
  parts.push(current);
  return parts.map((p) => p.trim()).filter((p) => p !== "");
}

function parseRequirement(text: string): Requirement {
  const fail = (why: string) => badRequest(`unable to parse requirement: ${why}`);
  let m = /^!\s*([^\s=!<>(),]+)$/.exec(text);
  if (m) return { key: m[1]!, op: "!exists" };
  m = /^([^\s=!<>(),]+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(text);
  if (m) {
    const values = m[3]!.split(",").map((v) => v.trim());
    return { key: m[1]!, op: m[2] as "in" | "notin", values };
  }
  m = /^([^\s=!<>(),]+)\s*(==|=|!=)\s*([^\s=!<>(),]*)$/.exec(text);
  if (m) return { key: m[1]!, op: m[2] === "!=" ? "!=" : "=", value: m[3]! };
  m = /^([^\s=!<>(),]+)\s*([<>])\s*(-?\d+)$/.exec(text);
  if (m) return { key: m[1]!, op: m[2] as ">" | "<", value: Number(m[3]) };
  m = /^([^\s=!<>(),]+)$/.exec(text);
  if (m) return { key: m[1]!, op: "exists" };
  throw fail(`found '${text}', expected: identifier, '!', 'in', 'notin', '=', '==', '!=', 'gt', 'lt'`);
}

function matches(r: Requirement, labels: Record<string, string>): boolean {
  const has = Object.hasOwn(labels, r.key);
  const value = labels[r.key];
  switch (r.op) {
    case "exists":
      return has;
    case "!exists":
      return !has;
    case "=":
      return has && value === r.value;
    case "!=":
      return !has || value !== r.value;
    case "in":
      return has && r.values.includes(value!);
    case "notin":
      return !has || !r.values.includes(value!);
    case ">":
      return has && /^-?\d+$/.test(value!) && Number(value) > r.value;
    case "<":
      return has && /^-?\d+$/.test(value!) && Number(value) < r.value;
  }
}

/** The `labelSelector` query syntax (=, ==, !=, in, notin, exists, !key, gt, lt); 400 when malformed. */
export function parseLabelSelector(selector: string | null): LabelSelector {
  const requirements = splitTopLevel(selector ?? "").map(parseRequirement);
  return (labels) => requirements.every((r) => matches(r, labels));
}

/** The string form of a LabelSelector object (`a=b,c in (d)`), as the Scale subresource reports it. */
export function selectorString(selector: JsonObject | undefined): string {
  if (!selector) return "";
  const parts = Object.entries(stringMap(selector.matchLabels)).map(([k, v]) => `${k}=${v}`);
  const expressions = Array.isArray(selector.matchExpressions) ? selector.matchExpressions : [];
  for (const e of expressions as JsonObject[]) {
    const values = (Array.isArray(e.values) ? e.values : []).join(",");
    if (e.operator === "In") parts.push(`${e.key} in (${values})`);
    else if (e.operator === "NotIn") parts.push(`${e.key} notin (${values})`);
    else if (e.operator === "Exists") parts.push(String(e.key));
    else if (e.operator === "DoesNotExist") parts.push(`!${e.key}`);
  }
  return parts.sort().join(",");
}

/** Field selectors each kind supports beyond metadata.name and metadata.namespace (its field label conversion). */
const FIELDS: Record<string, string[]> = {
  "/pods": [
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
  ],
  "/events": [
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
  ],
  "events.k8s.io/events": ["reason", "type", "reportingController"],
  "/secrets": ["type"],
  "/namespaces": ["status.phase"],
  "/nodes": ["spec.unschedulable"],
  "/services": ["spec.clusterIP", "spec.type"],
  "apps/replicasets": ["status.replicas"],
  "batch/jobs": ["status.successful"],
};

function fieldValue(object: JsonObject, field: string): string {
  if (field === "source") return String(getDotted(object, "source.component") ?? "");
  const value = field.startsWith("metadata.") ? meta(object)[field.slice(9)] : getDotted(object, field);
  if (value === undefined || value === null) return "";
  return String(value);
}

export type FieldSelector = (object: JsonObject) => boolean;

/** The `fieldSelector` query (=, ==, !=) over the fields the resource supports; 400 for other fields. */
export function parseFieldSelector(selector: string | null, resource: ResourceInfo): FieldSelector {
  const supported = [
    "metadata.name",
    "metadata.namespace",
    ...(FIELDS[`${resource.group}/${resource.plural}`] ?? []),
  ];
  const terms = (selector ?? "")
    .split(",")
    .map((t) => t.trim())
    .filter((t) => t !== "")
    .map((term) => {
      const m = /^([^=!]+?)\s*(==|=|!=)\s*(.*)$/.exec(term);
      if (!m) throw badRequest(`invalid selector: '${selector}'; can't understand '${term}'`);
      const [, field, op, value] = m as unknown as [string, string, string, string];
      if (!supported.includes(field)) {
        if (resource.custom) {
          throw badRequest(
            `"${field}" is not a known field selector: only "metadata.name", "metadata.namespace"`,
          );
        }
        throw badRequest(`field label not supported: ${field}`);
      }
      return { field, negate: op === "!=", value };
    });
  return (object) => terms.every((t) => (fieldValue(object, t.field) === t.value) !== t.negate);
}

/** Whether labels satisfy a LabelSelector object (matchLabels and matchExpressions). */
export function labelSelectorMatches(selector: JsonObject, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(stringMap(selector.matchLabels))) if (labels[k] !== v) return false;
  const expressions = Array.isArray(selector.matchExpressions) ? selector.matchExpressions : [];
  for (const e of expressions as JsonObject[]) {
    const key = String(e.key);
    const values = (Array.isArray(e.values) ? e.values : []).map(String);
    const has = Object.hasOwn(labels, key);
    const ok =
      e.operator === "In"
        ? has && values.includes(labels[key]!)
        : e.operator === "NotIn"
          ? !has || !values.includes(labels[key]!)
          : e.operator === "Exists"
            ? has
            : e.operator === "DoesNotExist"
              ? !has
              : false;
    if (!ok) return false;
  }
  return true;
}
