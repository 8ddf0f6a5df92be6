import { clone, deepEqual, isObject, type Json, type JsonObject } from "./json.js";
import { fieldSchema, itemSchema, type ListSchema, type Schema } from "./schema.js";
import { badRequest } from "./status-errors.js";

// Strategic merge patch (k8s.io/apimachinery/pkg/util/strategicpatch) for the built-in kinds: a JSON
// merge patch whose lists merge by their patchMergeKey, plus the directives kubectl's client-side
// apply sends: `$patch` (replace/delete/merge), `$setElementOrder/<list>`, `$retainKeys` and
// `$deleteFromPrimitiveList/<list>`.

const SET_ORDER = "$setElementOrder/";
const DELETE_FROM = "$deleteFromPrimitiveList/";

/** A patch value with every directive removed (what a replaced or added part becomes). */
function strip(value: Json): Json {
  if (Array.isArray(value)) return value.filter((v) => !(isObject(v) && v.$patch === "delete")).map(strip);
  if (!isObject(value)) return value;
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(value)) {
    if (k === "$patch" || k === "$retainKeys" || k.startsWith(SET_ORDER) || k.startsWith(DELETE_FROM))
      continue;
    if (v !== null) out[k] = strip(v);
  }
  return out;
}

function directive(patch: JsonObject): string | undefined {
  const d = patch.$patch;
  if (d === undefined) return undefined;
  if (d !== "replace" && d !== "delete" && d !== "merge")
    throw badRequest(`Unrecognized $patch: ${JSON.stringify(d)}`);
  return d;
}

/** Merges a patch map into an original map; undefined when the patch deletes the map. */
function mergeMap(
  original: JsonObject | undefined,
  patch: JsonObject,
  schema: Schema,
): JsonObject | undefined {
  const d = directive(patch);
  if (d === "delete") return undefined;
  if (d === "replace") return strip(patch) as JsonObject;
  const result: JsonObject = clone(original ?? {});
  const orders: [string, Json[]][] = [];
  for (const [key, value] of Object.entries(patch)) {
    if (key === "$patch") continue;
    if (key === "$retainKeys") continue;
    if (key.startsWith(SET_ORDER)) {
      if (Array.isArray(value)) orders.push([key.slice(SET_ORDER.length), value]);
      continue;
    }
    if (key.startsWith(DELETE_FROM)) {
      const field = key.slice(DELETE_FROM.length);
      const current = result[field];
      if (Array.isArray(current) && Array.isArray(value)) {
        result[field] = current.filter((item) => !value.some((v) => deepEqual(v, item)));
      }
      continue;
    }
    if (value === null) {
      delete result[key];
      continue;
    }
    const child = fieldSchema(schema, key);
    if (isObject(value)) {
      const merged = mergeMap(isObject(result[key]) ? result[key] : undefined, value, child);
      if (merged === undefined) delete result[key];
      else result[key] = merged;
    } else if (Array.isArray(value) && child.kind === "list") {
      result[key] = mergeList(Array.isArray(result[key]) ? result[key] : [], value, child);
    } else {
      result[key] = strip(value);
    }
  }
  for (const [field, order] of orders) {
    const list = result[field];
    if (Array.isArray(list)) result[field] = reorder(list, order, fieldSchema(schema, field));
  }
  const retain = patch.$retainKeys;
  if (Array.isArray(retain)) {
    for (const key of Object.keys(result)) if (!retain.includes(key)) delete result[key];
  }
  return result;
}

function keyOf(item: Json, key: string): Json | undefined {
  return isObject(item) ? item[key] : undefined;
}

function mergeList(original: Json[], patch: Json[], schema: ListSchema): Json[] {
  if (patch.some((item) => isObject(item) && item.$patch === "replace")) {
    return patch.filter((item) => !(isObject(item) && item.$patch === "replace")).map(strip);
  }
  if (schema.set) {
    const result = [...original];
    for (const item of patch) if (!result.some((r) => deepEqual(r, item))) result.push(item);
    return result;
  }
  const mergeKey = schema.mergeKey;
  if (mergeKey === undefined) return patch.map(strip);
  const result = clone(original);
  for (const item of patch) {
    if (!isObject(item))
      throw badRequest(`map: ${JSON.stringify(item)} does not contain declared merge key: ${mergeKey}`);
    const key = keyOf(item, mergeKey);
    if (key === undefined)
      throw badRequest(`map: ${JSON.stringify(item)} does not contain declared merge key: ${mergeKey}`);
    const index = result.findIndex((r) => deepEqual(keyOf(r, mergeKey), key));
    if (item.$patch === "delete") {
      if (index >= 0) result.splice(index, 1);
      continue;
    }
    if (index >= 0) result[index] = mergeMap(result[index] as JsonObject, item, itemSchema(schema)) ?? {};
    else result.push(strip(item));
  }
  return result;
}

/** `$setElementOrder`: items named in the order list come first, in that order; the others keep theirs after. */
function reorder(list: Json[], order: Json[], schema: Schema): Json[] {
  const mergeKey = schema.kind === "list" ? schema.mergeKey : undefined;
  const identity = (item: Json) => (mergeKey ? keyOf(item, mergeKey) : item);
  const position = (item: Json) => {
    const i = order.findIndex((o) => deepEqual(mergeKey && isObject(o) ? o[mergeKey] : o, identity(item)));
    return i < 0 ? order.length : i;
  };
  return list
    .map((item, i) => ({ item, i }))
    .sort((a, b) => position(a.item) - position(b.item) || a.i - b.i)
    .map(({ item }) => item);
}

/** Applies a strategic merge patch to a built-in object. */
export function applyStrategicMergePatch(original: JsonObject, patch: Json, schema: Schema): JsonObject {
  if (!isObject(patch))
    throw badRequest("json: cannot unmarshal array into Go value of type map[string]interface {}");
  return mergeMap(original, patch, schema) ?? {};
}
