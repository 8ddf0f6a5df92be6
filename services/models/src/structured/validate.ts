/**
 * Checks a parsed JSON value against a compiled schema: what the coordinator holds a provider's
 * structured output to, and what tests hold the grammar to. Same tree as the grammar, so anything the
 * grammar can generate passes (the grammar generates a subset: declared properties only, in order).
 */

import { FORMAT_PATTERNS } from "./formats.js";
import { outsideBounds } from "./number-range.js";
import { type CompiledSchema, isOfType, type SchemaNode } from "./schema.js";

/** The first place `value` breaks the schema (a JSON-path-like location and why), or undefined. */
export function schemaViolation(schema: CompiledSchema, value: unknown): string | undefined {
  return check(schema, schema.root, value, "$");
}

function check(schema: CompiledSchema, node: SchemaNode, value: unknown, path: string): string | undefined {
  switch (node.kind) {
    case "any":
      return undefined;
    case "boolean":
    case "null":
      return isOfType(value, node.kind) ? undefined : `${path}: expected ${node.kind}`;
    case "number":
      if (!isOfType(value, "number")) return `${path}: expected a number`;
      if (node.bounds) {
        const why = outsideBounds(node.bounds, value as number);
        return why === undefined ? undefined : `${path}: ${why}`;
      }
      return node.nonNegative && (value as number) < 0 ? `${path}: below the minimum 0` : undefined;
    case "integer":
      if (!isOfType(value, "integer")) return `${path}: expected an integer`;
      if ((value as number) < node.min) return `${path}: below the minimum ${node.min}`;
      return (value as number) > node.max ? `${path}: above the maximum ${node.max}` : undefined;
    case "string": {
      if (typeof value !== "string") return `${path}: expected a string`;
      if (node.pattern && !node.pattern.regex.test(value)) return `${path}: does not match the pattern`;
      if (node.format && !FORMAT_PATTERNS[node.format].test(value)) return `${path}: not a ${node.format}`;
      const length = [...value].length;
      if (length < node.minLength) return `${path}: shorter than ${node.minLength} characters`;
      if (node.maxLength !== undefined && length > node.maxLength) {
        return `${path}: longer than ${node.maxLength} characters`;
      }
      return undefined;
    }
    case "literal":
      return node.values.some((v) => jsonEqual(v, value))
        ? undefined
        : `${path}: not one of the allowed values`;
    case "union":
      return node.options.some((o) => check(schema, o, value, path) === undefined)
        ? undefined
        : `${path}: matches none of the 'anyOf' options`;
    case "ref":
      return check(schema, schema.defs.get(node.name) as SchemaNode, value, path);
    case "array": {
      if (!Array.isArray(value)) return `${path}: expected an array`;
      if (value.length < node.minItems) return `${path}: fewer than ${node.minItems} items`;
      if (node.maxItems !== undefined && value.length > node.maxItems) {
        return `${path}: more than ${node.maxItems} items`;
      }
      for (let i = 0; i < value.length; i++) {
        const bad = check(schema, node.items, value[i], `${path}[${i}]`);
        if (bad !== undefined) return bad;
      }
      return undefined;
    }
    case "object": {
      if (!isOfType(value, "object")) return `${path}: expected an object`;
      const o = value as Record<string, unknown>;
      const declared = new Set<string>();
      for (const p of node.properties) {
        declared.add(p.name);
        if (!Object.hasOwn(o, p.name)) {
          if (p.required) return `${path}: missing required property '${p.name}'`;
          continue;
        }
        const bad = check(schema, p.node, o[p.name], `${path}.${p.name}`);
        if (bad !== undefined) return bad;
      }
      if (!node.additional) {
        const extra = Object.keys(o).find((k) => !declared.has(k));
        if (extra !== undefined) return `${path}: property '${extra}' is not allowed`;
      }
      return undefined;
    }
  }
}

/** Structural equality of JSON values (key order ignored, as JSON Schema's enum compares). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bs = b as unknown[];
    return a.length === bs.length && a.every((v, i) => jsonEqual(v, bs[i]));
  }
  const ak = Object.keys(a);
  const bo = b as Record<string, unknown>;
  return (
    ak.length === Object.keys(bo).length &&
    ak.every((k) => Object.hasOwn(bo, k) && jsonEqual((a as Record<string, unknown>)[k], bo[k]))
  );
}
