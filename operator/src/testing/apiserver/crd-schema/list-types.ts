// x-kubernetes-list-type uniqueness (apiextensions-apiserver schema/listtype): a `set` list may not
// repeat an item, a `map` list may not repeat the values of its x-kubernetes-list-map-keys. Each
// repeated value is reported once, at its second occurrence, as a FieldValueDuplicate.

import { duplicate, invalid } from "./causes.js";
import { canonicalJson } from "./json.js";
import { child, index, key } from "./paths.js";
import { additional } from "./prune.js";
import { isObject, type JsonObject, type SchemaNode } from "./schema.js";
import type { FieldCause, Json } from "./types.js";

export function validateListTypes(value: Json, node: SchemaNode, field = ""): FieldCause[] {
  const out: FieldCause[] = [];
  visit(value, node, field, out);
  return out;
}

function visit(value: Json, node: SchemaNode, field: string, out: FieldCause[]): void {
  if (Array.isArray(value)) {
    if (node.listType === "set") {
      for (const i of repeated(value)) out.push(duplicate(index(field, i), value[i] as Json));
    } else if (node.listType === "map") {
      checkListMap(value, node, field, out);
    }
    const items = node.items;
    if (items !== undefined)
      for (const [i, item] of value.entries()) visit(item, items, index(field, i), out);
  } else if (isObject(value)) {
    const values = additional(node);
    for (const [name, item] of Object.entries(value)) {
      const property = node.properties?.get(name);
      if (property !== undefined) visit(item, property, child(field, name), out);
      else if (values !== undefined) visit(item, values, key(field, name), out);
    }
  }
}

function checkListMap(list: Json[], node: SchemaNode, field: string, out: FieldCause[]): void {
  const notObject = list.findIndex((item) => item !== null && !isObject(item));
  if (notObject >= 0) {
    out.push(
      invalid(
        index(field, notObject),
        list[notObject] as Json,
        "must be an object for an array of list-type map",
      ),
    );
    return;
  }
  // An item without a key field has the unspecified key, which is compared like a value.
  const keys = list.map((item) => {
    const entry: JsonObject = {};
    for (const k of node.listMapKeys) {
      const v = isObject(item) ? item[k] : undefined;
      if (v !== undefined) entry[k] = v;
    }
    return entry;
  });
  for (const i of repeated(keys)) out.push(duplicate(index(field, i), keys[i] as Json));
}

/** The indices of the second occurrences of repeated values (compared as canonical JSON). */
function repeated(values: readonly Json[]): number[] {
  const seen = new Map<string, number>();
  const indices: number[] = [];
  values.forEach((value, i) => {
    const canonical = canonicalJson(value);
    const times = seen.get(canonical) ?? 0;
    if (times === 1) indices.push(i);
    seen.set(canonical, times + 1);
  });
  return indices;
}
