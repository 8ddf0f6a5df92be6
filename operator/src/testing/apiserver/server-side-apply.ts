import type { FieldCause } from "./crd-schema/types.js";
import { clone, deepEqual, isObject, type Json, type JsonObject, nowTimestamp } from "./json.js";
import {
  type FieldPath,
  fieldSetOf,
  isLeaf,
  keyElement,
  type Manager,
  readManagers,
  SEP,
  sameManager,
  writeManagers,
} from "./managed-fields.js";
import { fieldSchema, type ListSchema, type Schema } from "./schema.js";
import { ApiError } from "./status-errors.js";

// Server-side apply (structured-merge-diff's Apply): the applied configuration is merged into the
// live object, the applier comes to own exactly the fields it applied, fields it applied before and
// no longer applies are removed unless another manager owns them, and changing a value another
// manager owns is a conflict unless forced (then the ownership moves).

export interface ApplyRequest {
  /** The stored object, undefined when the apply creates it. */
  live: JsonObject | undefined;
  config: JsonObject;
  schema: Schema;
  manager: string;
  force: boolean;
  apiVersion: string;
  subresource: "" | "status" | "scale";
}

function elementMatches(item: Json, element: string, list: ListSchema): boolean {
  return (list.set ? `v:${JSON.stringify(item)}` : keyElement(item, list)) === element;
}

/** Finds a path's node: its container and the key or index in it. */
function locate(
  root: Json,
  path: FieldPath,
  schema: Schema,
): { parent: JsonObject | Json[]; key: string | number } | undefined {
  let current: Json | undefined = root;
  let s = schema;
  let found: { parent: JsonObject | Json[]; key: string | number } | undefined;
  for (const e of path.split(SEP)) {
    if (e.startsWith("f:")) {
      if (!isObject(current)) return undefined;
      const name = e.slice(2);
      found = { parent: current, key: name };
      current = current[name];
      s = fieldSchema(s, name);
    } else {
      if (!Array.isArray(current) || s.kind !== "list") return undefined;
      const list: ListSchema = s;
      const index = current.findIndex((item) => elementMatches(item, e, list));
      if (index < 0) return undefined;
      found = { parent: current, key: index };
      current = current[index];
      s = list.items;
    }
    if (current === undefined) return undefined;
  }
  return found;
}

function valueAt(root: Json, path: FieldPath, schema: Schema): Json | undefined {
  const where = locate(root, path, schema);
  if (!where) return undefined;
  return Array.isArray(where.parent) ? where.parent[where.key as number] : where.parent[where.key as string];
}

/** Removes a path's node, then the maps the removal left empty (as Go's omitempty drops them). */
function removeAt(root: Json, path: FieldPath, schema: Schema): void {
  const elements = path.split(SEP);
  const where = locate(root, path, schema);
  if (!where) return;
  if (Array.isArray(where.parent)) where.parent.splice(where.key as number, 1);
  else delete where.parent[where.key as string];
  for (let depth = elements.length - 1; depth > 0; depth--) {
    const ancestor = locate(root, elements.slice(0, depth).join(SEP), schema);
    if (!ancestor || Array.isArray(ancestor.parent)) return;
    const value = ancestor.parent[ancestor.key as string];
    if (!isObject(value) || Object.keys(value).length > 0) return;
    delete ancestor.parent[ancestor.key as string];
  }
}

/** Merges an applied configuration into a live value: maps by field, keyed lists by key, sets by value. */
function merge(live: Json | undefined, config: Json, schema: Schema): Json | undefined {
  if (config === null) return undefined;
  if (live === undefined || isLeaf(config, schema) || Array.isArray(live) !== Array.isArray(config))
    return clone(config);
  if (isObject(config)) {
    const result: JsonObject = isObject(live) ? clone(live) : {};
    for (const [k, v] of Object.entries(config)) {
      const merged = merge(result[k], v, fieldSchema(schema, k));
      if (merged === undefined) delete result[k];
      else result[k] = merged;
    }
    return result;
  }
  const list = schema as ListSchema;
  const result = clone(live as Json[]);
  for (const item of config as Json[]) {
    const element = list.set ? `v:${JSON.stringify(item)}` : keyElement(item, list);
    const index = result.findIndex((r) => elementMatches(r, element, list));
    if (index < 0) result.push(clone(item));
    else if (!list.set) result[index] = merge(result[index], item, list.items) ?? result[index]!;
  }
  return result;
}

/** `.spec.template.spec.containers[name="app"].image`: a path as the real server prints it. */
export function pathString(path: FieldPath): string {
  return path
    .split(SEP)
    .map((e) => {
      const body = e.slice(2);
      if (e.startsWith("f:")) return `.${body}`;
      if (e.startsWith("v:")) return `[=${body}]`;
      if (e.startsWith("k:")) {
        const keys = JSON.parse(body) as JsonObject;
        return `[${Object.entries(keys)
          .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
          .join(",")}]`;
      }
      return `[${body}]`;
    })
    .join("");
}

function describeManager(m: Manager): string {
  let text = JSON.stringify(m.manager);
  if (m.subresource) text += ` with subresource ${JSON.stringify(m.subresource)}`;
  return m.operation === "Update" ? `${text} using ${m.apiVersion}` : text;
}

function conflictError(conflicts: { manager: Manager; path: FieldPath }[]): ApiError {
  const causes: FieldCause[] = conflicts.map((c) => ({
    reason: "FieldManagerConflict",
    message: `conflict with ${describeManager(c.manager)}`,
    field: pathString(c.path),
  }));
  let message: string;
  if (conflicts.length === 1) {
    message = `Apply failed with 1 conflict: conflict with ${describeManager(conflicts[0]!.manager)}: ${pathString(conflicts[0]!.path)}`;
  } else {
    const byManager = new Map<string, string[]>();
    for (const c of conflicts) {
      const name = describeManager(c.manager);
      byManager.set(name, [...(byManager.get(name) ?? []), `- ${pathString(c.path)}`]);
    }
    const lines = [...byManager.keys()]
      .sort()
      .flatMap((name) => [`conflicts with ${name}:`, ...byManager.get(name)!]);
    message = `Apply failed with ${conflicts.length} conflicts: ${lines.join("\n")}`;
  }
  return new ApiError(409, "Conflict", message, { causes });
}

/** The object after the apply, with its managedFields updated; 409 on conflicts unless forced. */
export function serverSideApply(request: ApplyRequest): JsonObject {
  const { live, config, schema } = request;
  const applied = fieldSetOf(config, schema);
  const id = {
    manager: request.manager,
    operation: "Apply" as const,
    apiVersion: request.apiVersion,
    subresource: request.subresource,
  };
  const managers = readManagers(live);
  const previous = managers.find((m) => sameManager(m, id))?.fields ?? new Set<FieldPath>();
  const others = managers.filter((m) => !sameManager(m, id));

  // Only values the apply changes conflict: applying what is already there shares the ownership.
  const leaves = [...applied].filter((p) => ![...applied].some((q) => q.startsWith(p + SEP)));
  const conflicts: { manager: Manager; path: FieldPath }[] = [];
  for (const path of leaves) {
    const current = live && valueAt(live, path, schema);
    if (current === undefined || deepEqual(current, valueAt(config, path, schema))) continue;
    for (const m of others) if (m.fields.has(path)) conflicts.push({ manager: m, path });
  }
  if (conflicts.length > 0 && !request.force) throw conflictError(conflicts);
  for (const { manager, path } of conflicts) manager.fields.delete(path);

  const result = (merge(live ?? {}, config, schema) ?? {}) as JsonObject;
  const dropped = [...previous]
    .filter((p) => !applied.has(p) && !others.some((m) => m.fields.has(p)))
    .sort((a, b) => b.length - a.length);
  for (const path of dropped) removeAt(result, path, schema);

  writeManagers(result, [...others, { ...id, time: nowTimestamp(), fields: applied }]);
  return result;
}
