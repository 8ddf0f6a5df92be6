import { deepEqual, isObject, type Json, type JsonObject, meta, nowTimestamp, str } from "./json.js";
import { fieldSchema, type ListSchema, type Schema } from "./schema.js";

// Field ownership (sigs.k8s.io/structured-merge-diff): a set of paths per manager, serialised in
// `metadata.managedFields[].fieldsV1` with the real encoding: `f:<field>`, `k:<json of the keys>` for
// items of keyed lists, `v:<json value>` for items of sets, and `.` for a node that is itself owned
// and has owned children.

/** A path: its elements joined by SEP (an element never contains it: JSON escapes control characters). */
export type FieldPath = string;
export const SEP = "\u0001";

export function join(path: readonly string[]): FieldPath {
  return path.join(SEP);
}

/** Fields nobody owns: identity and server-maintained metadata. */
const UNOWNED = new Set(
  [
    ["f:apiVersion"],
    ["f:kind"],
    ...[
      "name",
      "namespace",
      "uid",
      "resourceVersion",
      "generation",
      "creationTimestamp",
      "deletionTimestamp",
      "deletionGracePeriodSeconds",
      "managedFields",
      "selfLink",
    ].map((f) => ["f:metadata", `f:${f}`]),
  ].map(join),
);

function owned(path: FieldPath): boolean {
  for (const unowned of UNOWNED) if (path === unowned || path.startsWith(unowned + SEP)) return false;
  return true;
}

/** `k:{"name":"x"}` for an item of a keyed list (keys sorted, defaults filled in as the server defaults them). */
export function keyElement(item: Json, schema: ListSchema): string {
  if (!isObject(item)) return `v:${JSON.stringify(item)}`;
  const keys: JsonObject = {};
  for (const k of [...(schema.keys ?? [])].sort()) {
    const value = item[k] ?? schema.keyDefaults?.[k];
    if (value !== undefined) keys[k] = value;
  }
  return `k:${JSON.stringify(keys)}`;
}

/** Whether a value is owned as one piece (a scalar, or something atomic) rather than field by field. */
export function isLeaf(value: Json | undefined, schema: Schema): boolean {
  switch (schema.kind) {
    case "scalar":
      return true;
    case "object":
    case "map":
      return schema.atomic === true || !isObject(value);
    case "list":
      return (schema.keys === undefined && !schema.set) || !Array.isArray(value);
    case "any":
      return !isObject(value);
  }
}

function collect(value: Json, schema: Schema, path: string[], out: Set<FieldPath>): void {
  if (value === null) return;
  if (isLeaf(value, schema)) {
    out.add(join(path));
    return;
  }
  if (isObject(value)) {
    for (const [k, v] of Object.entries(value)) collect(v, fieldSchema(schema, k), [...path, `f:${k}`], out);
    return;
  }
  const list = schema as ListSchema;
  for (const item of value as Json[]) {
    const itemPath = [...path, list.set ? `v:${JSON.stringify(item)}` : keyElement(item, list)];
    out.add(join(itemPath));
    if (!list.set && isObject(item)) collect(item, list.items, itemPath, out);
  }
}

/** Every owned path of an object: what an applier of it owns. */
export function fieldSetOf(object: JsonObject, schema: Schema): Set<FieldPath> {
  const out = new Set<FieldPath>();
  collect(object, schema, [], out);
  return new Set([...out].filter(owned));
}

/** What an update changed: paths added or modified (the updater takes them) and paths removed (nobody keeps them). */
export function diffFieldSets(
  before: Json | undefined,
  after: Json | undefined,
  schema: Schema,
): { changed: Set<FieldPath>; removed: Set<FieldPath> } {
  const changed = new Set<FieldPath>();
  const removed = new Set<FieldPath>();
  diff(before ?? null, after ?? null, schema, [], changed, removed);
  return { changed: new Set([...changed].filter(owned)), removed: new Set([...removed].filter(owned)) };
}

function diff(
  a: Json,
  b: Json,
  schema: Schema,
  path: string[],
  changed: Set<FieldPath>,
  removed: Set<FieldPath>,
): void {
  if (a === null && b === null) return;
  if (b === null) {
    removed.add(join(path));
    return;
  }
  if (a === null) {
    collect(b, schema, path, changed);
    return;
  }
  const [aLeaf, bLeaf] = [isLeaf(a, schema), isLeaf(b, schema)];
  if (aLeaf && bLeaf) {
    if (!deepEqual(a, b)) changed.add(join(path));
    return;
  }
  if (aLeaf !== bLeaf || Array.isArray(a) !== Array.isArray(b)) {
    removed.add(join(path));
    collect(b, schema, path, changed);
    return;
  }
  if (isObject(a) && isObject(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      diff(a[k] ?? null, b[k] ?? null, fieldSchema(schema, k), [...path, `f:${k}`], changed, removed);
    }
    return;
  }
  const list = schema as ListSchema;
  const element = (item: Json) => (list.set ? `v:${JSON.stringify(item)}` : keyElement(item, list));
  const before = new Map((a as Json[]).map((item) => [element(item), item]));
  const after = new Map((b as Json[]).map((item) => [element(item), item]));
  for (const [e, item] of after) {
    const itemPath = [...path, e];
    const old = before.get(e);
    if (old === undefined) {
      changed.add(join(itemPath));
      if (!list.set && isObject(item)) collect(item, list.items, itemPath, changed);
    } else if (!list.set) diff(old, item, list.items, itemPath, changed, removed);
  }
  for (const e of before.keys()) if (!after.has(e)) removed.add(join([...path, e]));
}

export function withoutDescendants(set: Set<FieldPath>, removed: Iterable<FieldPath>): Set<FieldPath> {
  const prefixes = [...removed];
  return new Set([...set].filter((p) => !prefixes.some((r) => p === r || p.startsWith(r + SEP))));
}

/** The `fieldsV1` encoding of a set. */
export function encodeFieldSet(set: Set<FieldPath>): JsonObject {
  const root: JsonObject = {};
  const node = (path: string): JsonObject => {
    let current = root;
    for (const e of path.split(SEP)) {
      if (!isObject(current[e])) current[e] = {};
      current = current[e] as JsonObject;
    }
    return current;
  };
  for (const p of set) node(p);
  for (const p of set) {
    const n = node(p);
    if (Object.keys(n).length > 0) n["."] = {};
  }
  return sortKeys(root);
}

function sortKeys(node: JsonObject): JsonObject {
  const keys = Object.keys(node).sort((a, b) =>
    a === "." ? -1 : b === "." ? 1 : a < b ? -1 : a > b ? 1 : 0,
  );
  return Object.fromEntries(keys.map((k) => [k, sortKeys(node[k] as JsonObject)]));
}

export function decodeFieldSet(fields: Json | undefined): Set<FieldPath> {
  const out = new Set<FieldPath>();
  const walk = (node: JsonObject, path: string[]) => {
    for (const [k, v] of Object.entries(node)) {
      if (k === ".") out.add(join(path));
      else if (isObject(v) && Object.keys(v).length > 0) walk(v, [...path, k]);
      else out.add(join([...path, k]));
    }
  };
  if (isObject(fields)) walk(fields, []);
  return out;
}

/** One manager's ownership, decoded. */
export interface Manager {
  manager: string;
  operation: "Apply" | "Update";
  apiVersion: string;
  subresource: string;
  time: string;
  fields: Set<FieldPath>;
}

/** Managers are told apart by name, operation and subresource, and for Update also by API version (as the real field manager does). */
export function sameManager(
  a: Manager,
  b: Pick<Manager, "manager" | "operation" | "apiVersion" | "subresource">,
): boolean {
  return (
    a.manager === b.manager &&
    a.operation === b.operation &&
    a.subresource === b.subresource &&
    (a.operation === "Apply" || a.apiVersion === b.apiVersion)
  );
}

export function readManagers(object: JsonObject | undefined): Manager[] {
  const entries = object ? meta(object).managedFields : undefined;
  if (!Array.isArray(entries)) return [];
  return entries.filter(isObject).map((e) => ({
    manager: str(e.manager) ?? "",
    operation: e.operation === "Apply" ? "Apply" : "Update",
    apiVersion: str(e.apiVersion) ?? "",
    subresource: str(e.subresource) ?? "",
    time: str(e.time) ?? nowTimestamp(),
    fields: decodeFieldSet(e.fieldsV1),
  }));
}

/** Encodes managers, dropping those that own nothing, in the real server's order (operation, time, name). */
export function writeManagers(object: JsonObject, managers: Manager[]): void {
  const entries = managers
    .filter((m) => m.fields.size > 0)
    .sort(
      (a, b) =>
        (a.operation < b.operation ? -1 : a.operation > b.operation ? 1 : 0) ||
        (a.time < b.time ? -1 : a.time > b.time ? 1 : 0) ||
        (a.manager < b.manager ? -1 : a.manager > b.manager ? 1 : 0),
    )
    .map((m) => {
      const entry: JsonObject = {
        manager: m.manager,
        operation: m.operation,
        apiVersion: m.apiVersion,
        time: m.time,
        fieldsType: "FieldsV1",
        fieldsV1: encodeFieldSet(m.fields),
      };
      if (m.subresource) entry.subresource = m.subresource;
      return entry;
    });
  const metadata = meta(object);
  if (entries.length > 0) metadata.managedFields = entries;
  else delete metadata.managedFields;
}

/**
 * Records a non-apply write (create, update, patch): the updater takes every field it added or changed,
 * from whoever owned it, and removed fields leave every manager.
 */
export function recordUpdate(
  before: JsonObject | undefined,
  after: JsonObject,
  schema: Schema,
  who: { manager: string; apiVersion: string; subresource: string },
): void {
  const { changed, removed } = diffFieldSets(before, after, schema);
  const managers = readManagers(after).map((m) => ({
    ...m,
    fields: withoutDescendants(new Set([...m.fields].filter((p) => !changed.has(p))), removed),
  }));
  if (changed.size > 0) {
    const id = { ...who, operation: "Update" as const };
    let mine = managers.find((m) => sameManager(m, id));
    if (!mine) {
      mine = { ...id, time: nowTimestamp(), fields: new Set() };
      managers.push(mine);
    }
    mine.time = nowTimestamp();
    for (const p of changed) mine.fields.add(p);
  }
  writeManagers(after, managers);
}
