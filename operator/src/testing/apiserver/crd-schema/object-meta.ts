// What the server checks of a custom resource's metadata and of embedded resources beyond the
// schema: the name is a DNS-1123 subdomain (ValidateObjectMetaAccessor with NameIsDNSSubdomain), and
// an x-kubernetes-embedded-resource object has a non-empty string apiVersion and kind
// (apiextensions-apiserver schema/objectmeta/validation.go).

import { invalid, required } from "./causes.js";
import { dns1035LabelErrors, dns1123SubdomainErrors } from "./names.js";
import { child, index, key } from "./paths.js";
import { additional } from "./prune.js";
import { isObject, type JsonObject, type SchemaNode } from "./schema.js";
import type { FieldCause, Json } from "./types.js";

export function validateObjectMeta(object: JsonObject, root: SchemaNode): FieldCause[] {
  const out: FieldCause[] = [];
  const metadata = object.metadata;
  const name = isObject(metadata) ? metadata.name : undefined;
  if (typeof name === "string" && name !== "") {
    for (const message of dns1123SubdomainErrors(name)) out.push(invalid("metadata.name", name, message));
  }
  visit(object, root, "", true, out);
  return out;
}

function visit(value: Json, node: SchemaNode, field: string, isRoot: boolean, out: FieldCause[]): void {
  if (Array.isArray(value)) {
    const items = node.items;
    if (items !== undefined)
      for (const [i, item] of value.entries()) visit(item, items, index(field, i), false, out);
    return;
  }
  if (!isObject(value)) return;
  if (node.embeddedResource && !isRoot) checkEmbedded(value, field, out);
  const values = additional(node);
  for (const [name, item] of Object.entries(value)) {
    if (node.embeddedResource && (name === "apiVersion" || name === "kind" || name === "metadata")) continue;
    const property = node.properties?.get(name);
    if (property !== undefined) visit(item, property, child(field, name), false, out);
    else if (values !== undefined) visit(item, values, key(field, name), false, out);
  }
}

function checkEmbedded(value: JsonObject, field: string, out: FieldCause[]): void {
  for (const name of ["apiVersion", "kind"]) {
    const at = child(field, name);
    const v = value[name];
    if (v === undefined) out.push(required(at, "must not be empty"));
    else if (typeof v !== "string") out.push(invalid(at, v, "must be a string"));
    else if (v === "") out.push(invalid(at, v, "must not be empty"));
    else if (name === "kind") {
      const errors = dns1035LabelErrors(v.toLowerCase());
      if (errors.length > 0)
        out.push(invalid(at, v, `may have mixed case, but should otherwise match: ${errors.join(",")}`));
    }
  }
}
