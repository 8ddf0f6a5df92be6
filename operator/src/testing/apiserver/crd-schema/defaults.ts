// Defaulting (apiextensions-apiserver schema/defaulting): a property's default is set where the
// property is absent, or null while not nullable; the walk then descends into every present value,
// defaulted ones included, so a defaulted `{}` gets its own fields' defaults. Defaults are copied.
// When a CRD is created, each default must be pruned already and valid against its own schema
// (OpenAPI and CEL rules), as the server requires (defaulting/validation.go).

import { invalid } from "./causes.js";
import { clone, deepEqual } from "./json.js";
import { child, key } from "./paths.js";
import { additional, pruneValue } from "./prune.js";
import type { RuleSet } from "./rules.js";
import { isObject, type SchemaNode } from "./schema.js";
import type { FieldCause, Json } from "./types.js";
import { validateSchema } from "./validate.js";

/** Applies the defaults of `node` to `value` in place. */
export function applyDefaults(value: Json, node: SchemaNode | undefined): void {
  if (node === undefined) return;
  if (Array.isArray(value)) {
    const items = node.items;
    if (items === undefined) return;
    value.forEach((item, i) => {
      if (item === null && !items.nullable && items.default !== undefined) value[i] = clone(items.default);
      applyDefaults(value[i] as Json, items);
    });
    return;
  }
  if (!isObject(value)) return;
  for (const [name, property] of node.properties ?? []) {
    if (property.default === undefined) continue;
    const current = value[name];
    if (current === undefined || (current === null && !property.nullable))
      value[name] = clone(property.default);
  }
  const values = additional(node);
  for (const name of Object.keys(value)) {
    const property = node.properties?.get(name);
    if (property !== undefined) {
      applyDefaults(value[name] as Json, property);
    } else if (values !== undefined) {
      if (value[name] === null && !values.nullable && values.default !== undefined)
        value[name] = clone(values.default);
      applyDefaults(value[name] as Json, values);
    }
  }
}

/**
 * The causes for defaults that are not pruned or not valid; `path` is the schema's path in the CRD.
 * Defaults under the root's apiVersion, kind and metadata are refused by structural.ts already.
 */
export function checkDefaults(root: SchemaNode, path: string, rules: RuleSet): FieldCause[] {
  const out: FieldCause[] = [];
  visit(root, path, true, rules, out);
  return out;
}

/**
 * The rules, run as the server runs them on a default: as an update from the default to itself (so
 * transition rules hold), then, for optionalOldSelf rules, as a create.
 */
function defaultRuleErrors(value: Json, node: SchemaNode, at: string, rules: RuleSet): FieldCause[] {
  const asUpdate = rules.validate(value, value, node, at, node.embeddedResource);
  return asUpdate.length > 0 ? asUpdate : rules.validate(value, undefined, node, at, node.embeddedResource);
}

function visit(node: SchemaNode, path: string, isResource: boolean, rules: RuleSet, out: FieldCause[]): void {
  const value = node.default;
  if (value !== undefined) {
    const at = child(path, "default");
    const pruned = clone(value);
    pruneValue(pruned, node, node.embeddedResource);
    if (!deepEqual(pruned, value)) out.push(invalid(at, value, "must not have unknown fields"));
    const errors = validateSchema(value, node, at);
    out.push(...(errors.length > 0 ? errors : defaultRuleErrors(value, node, at, rules)));
  }
  // As on the server, defaults under additionalProperties are not checked, nor those of resource meta
  // (the server checks an embedded resource's meta defaults as metadata, which this engine skips).
  if (node.items !== undefined) visit(node.items, `${path}.items`, node.items.embeddedResource, rules, out);
  for (const [name, property] of node.properties ?? []) {
    if (isResource && (name === "apiVersion" || name === "kind" || name === "metadata")) continue;
    visit(property, key(`${path}.properties`, name), property.embeddedResource, rules, out);
  }
}
