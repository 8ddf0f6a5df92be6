// OpenAPI v3 value validation as the API server runs it (k8s.io/kube-openapi validate, converted to
// field errors by apiextensions-apiserver's kubeOpenAPIResultToFieldErrors): the messages name the
// value's path "in body", and the reasons follow that conversion (Required, NotSupported for enum,
// TooLong for maxLength, TooMany for maxItems/maxProperties, TypeInvalid for types and formats).

import {
  goFloat,
  goNumber,
  invalid,
  notSupported,
  quote,
  required,
  tooLong,
  tooMany,
  typeInvalid,
} from "./causes.js";
import { checkFormat } from "./formats.js";
import { deepEqual, jsonType } from "./json.js";
import { child, index, key } from "./paths.js";
import { isObject, type SchemaNode } from "./schema.js";
import type { FieldCause, Json } from "./types.js";

/**
 * Validates `value` against `node`. `base` is the field path the validation starts at ("" for a
 * custom resource, `…default` for a schema's default): the messages name paths relative to it,
 * as the server's validator does, and the causes' fields are the full paths.
 */
export function validateSchema(value: Json, node: SchemaNode, base = ""): FieldCause[] {
  const out: FieldCause[] = [];
  validateNode(value, node, "", { base, out });
  return out;
}

interface Context {
  readonly base: string;
  readonly out: FieldCause[];
}

function validateNode(value: Json, node: SchemaNode, name: string, ctx: Context): void {
  const field = fieldOf(ctx.base, name);
  if (!typeMatches(value, node)) {
    const actual = jsonType(value);
    const types = schemaTypes(node).join(",");
    ctx.out.push(typeInvalid(field, actual, `${name} in body must be of type ${types}: ${quote(actual)}`));
    validateEnum(value, node, field, ctx);
    return;
  }
  validateEnum(value, node, field, ctx);
  if (value === null) return;
  validateJunctors(value, node, name, ctx);
  if (typeof value === "string") validateString(value, node, name, field, ctx);
  else if (typeof value === "number") validateNumber(value, node, name, field, ctx);
  else if (Array.isArray(value)) validateArray(value, node, name, field, ctx);
  else if (isObject(value)) validateObject(value, node, name, field, ctx);
}

/** A nested error path inside the validated value, joined to where the validation started. */
function fieldOf(base: string, name: string): string {
  if (name === "") return base;
  if (base === "") return name;
  return name.startsWith("[") ? `${base}${name}` : `${base}.${name}`;
}

function schemaTypes(node: SchemaNode): string[] {
  if (node.intOrString) return ["integer", "string"];
  return node.type === undefined ? [] : [node.type];
}

function typeMatches(value: Json, node: SchemaNode): boolean {
  const types = schemaTypes(node);
  if (types.length === 0) return true;
  if (value === null) return node.nullable;
  const actual = jsonType(value);
  return types.includes(actual) || (actual === "integer" && types.includes("number"));
}

function validateEnum(value: Json, node: SchemaNode, field: string, ctx: Context): void {
  if (node.enum === undefined || node.enum.some((allowed) => deepEqual(allowed, value))) return;
  const supported = node.enum.map((allowed) =>
    typeof allowed === "string" ? allowed : JSON.stringify(allowed),
  );
  ctx.out.push(notSupported(field, value, supported));
}

function validateString(value: string, node: SchemaNode, name: string, field: string, ctx: Context): void {
  // Lengths count code points, as Go's utf8.RuneCountInString does.
  const length = [...value].length;
  if (node.maxLength !== undefined && length > node.maxLength) ctx.out.push(tooLong(field, node.maxLength));
  if (node.minLength !== undefined && length < node.minLength) {
    ctx.out.push(invalid(field, value, `${name} in body should be at least ${node.minLength} chars long`));
  }
  if (node.pattern !== undefined && !node.pattern.test(value)) {
    ctx.out.push(invalid(field, value, `${name} in body should match '${node.patternSource}'`));
  }
  if (node.format !== undefined && !checkFormat(node.format, value)) {
    ctx.out.push(
      typeInvalid(field, value, `${name} in body must be of type ${node.format}: ${quote(value)}`),
    );
  }
}

function validateNumber(value: number, node: SchemaNode, name: string, field: string, ctx: Context): void {
  const limit = (bound: number) => limitText(bound, value);
  const push = (detail: string) => ctx.out.push(invalid(field, value, `${name} in body ${detail}`));
  if (node.maximum !== undefined) {
    if (node.exclusiveMaximum ? value >= node.maximum : value > node.maximum) {
      push(`should be less than ${node.exclusiveMaximum ? "" : "or equal to "}${limit(node.maximum)}`);
    }
  }
  if (node.minimum !== undefined) {
    if (node.exclusiveMinimum ? value <= node.minimum : value < node.minimum) {
      push(`should be greater than ${node.exclusiveMinimum ? "" : "or equal to "}${limit(node.minimum)}`);
    }
  }
  if (node.multipleOf !== undefined && node.multipleOf > 0) {
    const quotient = value / node.multipleOf;
    if (Math.abs(quotient - Math.round(quotient)) > 1e-9)
      push(`should be a multiple of ${limit(node.multipleOf)}`);
  }
}

/** A bound in a message: compared as int64 when the value and the bound are whole, else as float64. */
function limitText(bound: number, value: number): string {
  return Number.isInteger(value) && Number.isInteger(bound) ? goNumber(bound) : goFloat(bound);
}

function validateArray(value: Json[], node: SchemaNode, name: string, field: string, ctx: Context): void {
  if (node.minItems !== undefined && value.length < node.minItems) {
    ctx.out.push(invalid(field, value.length, `${name} in body should have at least ${node.minItems} items`));
  }
  if (node.maxItems !== undefined && value.length > node.maxItems) {
    ctx.out.push(tooMany(field, value.length, node.maxItems));
  }
  const items = node.items;
  if (items !== undefined)
    for (const [i, item] of value.entries()) validateNode(item, items, index(name, i), ctx);
}

function validateObject(
  value: { [key: string]: Json },
  node: SchemaNode,
  name: string,
  field: string,
  ctx: Context,
): void {
  const count = Object.keys(value).length;
  if (node.minProperties !== undefined && count < node.minProperties) {
    ctx.out.push(
      invalid(field, count, `${name} in body should have at least ${node.minProperties} properties`),
    );
  }
  if (node.maxProperties !== undefined && count > node.maxProperties) {
    ctx.out.push(tooMany(field, count, node.maxProperties));
  }
  for (const property of node.required) {
    if (!Object.hasOwn(value, property)) ctx.out.push(required(fieldOf(ctx.base, child(name, property))));
  }
  for (const [property, item] of Object.entries(value)) {
    const schema = node.properties?.get(property);
    if (schema !== undefined) validateNode(item, schema, child(name, property), ctx);
    else if (node.additionalProperties === false) {
      ctx.out.push(invalid(field, property, `${name}.${property} in body is a forbidden property`));
    } else if (typeof node.additionalProperties === "object") {
      validateNode(item, node.additionalProperties, key(name, property), ctx);
    }
  }
}

/**
 * allOf, anyOf, oneOf and not: value validations only (a structural schema has no types in them).
 * Their summary errors are not field errors in the validator, so the server reports them at the
 * path the validation started from, with an empty value.
 */
function validateJunctors(value: Json, node: SchemaNode, name: string, ctx: Context): void {
  const summary = (detail: string) => ctx.out.push(invalid(ctx.base, "", `${name} ${detail}`));
  const attempt = (schema: SchemaNode): FieldCause[] => {
    const out: FieldCause[] = [];
    validateNode(value, schema, name, { base: ctx.base, out });
    return out;
  };
  let allValid = true;
  for (const schema of node.allOf) {
    const errors = attempt(schema);
    allValid &&= errors.length === 0;
    ctx.out.push(...errors);
  }
  if (!allValid) summary("must validate all the schemas (allOf)");
  if (node.anyOf.length > 0) {
    const results = node.anyOf.map(attempt);
    if (!results.some((errors) => errors.length === 0)) {
      summary("must validate at least one schema (anyOf)");
      ctx.out.push(...fewest(results));
    }
  }
  if (node.oneOf.length > 0) {
    const results = node.oneOf.map(attempt);
    const valid = results.filter((errors) => errors.length === 0).length;
    if (valid !== 1) summary("must validate one and only one schema (oneOf)");
    if (valid === 0) ctx.out.push(...fewest(results));
  }
  if (node.not !== undefined && attempt(node.not).length === 0) summary("must not validate the schema (not)");
}

/** The failures of the branch that came closest, which the server reports alongside the summary. */
function fewest(results: FieldCause[][]): FieldCause[] {
  return results.reduce((best, errors) => (errors.length < best.length ? errors : best));
}
