// Pruning (apiextensions-apiserver schema/pruning): fields the schema does not declare are dropped.
// apiVersion, kind and metadata are kept at the root and in embedded resources; under
// x-kubernetes-preserve-unknown-fields unknown fields stay, while declared ones are still pruned inside.
// The server's coercer then drops nulls the schema does not allow and has no default for
// (schema/defaulting/prunenulls.go), so it does that here too.

import { isObject, type JsonObject, type SchemaNode } from "./schema.js";
import type { Json } from "./types.js";

const META_FIELDS = new Set(["apiVersion", "kind", "metadata"]);

/** Prunes a whole object against the version's root schema, then its disallowed nulls. Mutates. */
export function pruneObject(object: JsonObject, root: SchemaNode): void {
  pruneValue(object, root, true);
  pruneNulls(object, root);
}

/** Prunes a value in place; `node` undefined means no schema at all (a boolean `additionalProperties`). */
export function pruneValue(value: Json, node: SchemaNode | undefined, isResource = false): void {
  if (node?.preserveUnknownFields) {
    skipPrune(value, node, isResource);
    return;
  }
  if (Array.isArray(value)) {
    for (const item of value) pruneValue(item, node?.items);
    return;
  }
  if (!isObject(value)) return;
  if (node === undefined) {
    for (const name of Object.keys(value)) delete value[name];
    return;
  }
  const keepMeta = isResource || node.embeddedResource;
  for (const [name, field] of Object.entries(value)) {
    if (keepMeta && META_FIELDS.has(name)) continue;
    const property = node.properties?.get(name);
    if (property !== undefined) pruneValue(field, property);
    else if (node.additionalProperties !== undefined) pruneValue(field, additional(node));
    else delete value[name];
  }
}

/** Under x-kubernetes-preserve-unknown-fields: unknown fields stay, declared ones are pruned. */
function skipPrune(value: Json, node: SchemaNode, isResource: boolean): void {
  if (Array.isArray(value)) {
    if (node.items !== undefined) for (const item of value) skipPrune(item, node.items, false);
    return;
  }
  if (!isObject(value)) return;
  const keepMeta = isResource || node.embeddedResource;
  for (const [name, field] of Object.entries(value)) {
    if (keepMeta && META_FIELDS.has(name)) continue;
    const property = node.properties?.get(name);
    if (property !== undefined) pruneValue(field, property);
    else if (node.additionalProperties !== undefined) pruneValue(field, additional(node));
  }
}

/** The schema of a map's values; a boolean `additionalProperties` has none. */
export function additional(node: SchemaNode): SchemaNode | undefined {
  return typeof node.additionalProperties === "boolean" ? undefined : node.additionalProperties;
}

/** Drops null fields that are neither nullable nor defaulted (defaulting replaces the defaulted ones). */
function pruneNulls(value: Json, node: SchemaNode): void {
  if (Array.isArray(value)) {
    if (node.items !== undefined) for (const item of value) pruneNulls(item, node.items);
    return;
  }
  if (!isObject(value)) return;
  const values = additional(node);
  for (const [name, field] of Object.entries(value)) {
    const schema = node.properties?.get(name) ?? values;
    if (schema === undefined) continue;
    if (field === null && !schema.nullable && schema.default === undefined) delete value[name];
    else pruneNulls(field, schema);
  }
}
