// A CRD's openAPIV3Schema read once into typed nodes that pruning, defaulting, validation and the
// CEL rules walk. Reading is lenient: a keyword of the wrong JSON type is ignored here, and
// structural.ts reports it when the CRD is checked, so a node never throws while objects are served.

import type { Json } from "./types.js";

export type JsonObject = { [key: string]: Json };

/** One entry of `x-kubernetes-validations`, as written. */
export interface RuleSpec {
  readonly rule: string;
  readonly message: string | undefined;
  readonly messageExpression: string | undefined;
  readonly reason: string | undefined;
  readonly fieldPath: string | undefined;
  readonly optionalOldSelf: boolean | undefined;
}

export interface SchemaNode {
  readonly raw: JsonObject;
  readonly type: string | undefined;
  readonly format: string | undefined;
  readonly nullable: boolean;
  readonly properties: ReadonlyMap<string, SchemaNode> | undefined;
  /**
   * A schema for the values of a map; or a boolean, which the server accepts too: `true` allows any
   * value (objects in it are pruned empty), `false` forbids properties the schema does not declare.
   */
  readonly additionalProperties: SchemaNode | boolean | undefined;
  readonly items: SchemaNode | undefined;
  readonly required: readonly string[];
  readonly enum: readonly Json[] | undefined;
  /** Absent and `null` are the same: the server treats a null default as no default. */
  readonly default: Json | undefined;
  readonly pattern: RegExp | undefined;
  readonly patternSource: string | undefined;
  readonly minimum: number | undefined;
  readonly maximum: number | undefined;
  readonly exclusiveMinimum: boolean;
  readonly exclusiveMaximum: boolean;
  readonly multipleOf: number | undefined;
  readonly minLength: number | undefined;
  readonly maxLength: number | undefined;
  readonly minItems: number | undefined;
  readonly maxItems: number | undefined;
  readonly minProperties: number | undefined;
  readonly maxProperties: number | undefined;
  readonly allOf: readonly SchemaNode[];
  readonly anyOf: readonly SchemaNode[];
  readonly oneOf: readonly SchemaNode[];
  readonly not: SchemaNode | undefined;
  readonly preserveUnknownFields: boolean;
  readonly embeddedResource: boolean;
  readonly intOrString: boolean;
  readonly listType: string | undefined;
  readonly listMapKeys: readonly string[];
  readonly mapType: string | undefined;
  readonly validations: readonly RuleSpec[];
}

export function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function parseSchema(raw: JsonObject): SchemaNode {
  const patternSource = str(raw, "pattern");
  const ap = raw.additionalProperties;
  return {
    raw,
    type: str(raw, "type"),
    format: str(raw, "format"),
    nullable: raw.nullable === true,
    properties: isObject(raw.properties) ? parseProperties(raw.properties) : undefined,
    additionalProperties: isObject(ap) ? parseSchema(ap) : typeof ap === "boolean" ? ap : undefined,
    items: isObject(raw.items) ? parseSchema(raw.items) : undefined,
    required: strings(raw.required),
    enum: Array.isArray(raw.enum) ? raw.enum : undefined,
    default: raw.default ?? undefined,
    pattern: patternSource === undefined ? undefined : compilePattern(patternSource),
    patternSource,
    minimum: num(raw, "minimum"),
    maximum: num(raw, "maximum"),
    exclusiveMinimum: raw.exclusiveMinimum === true,
    exclusiveMaximum: raw.exclusiveMaximum === true,
    multipleOf: num(raw, "multipleOf"),
    minLength: num(raw, "minLength"),
    maxLength: num(raw, "maxLength"),
    minItems: num(raw, "minItems"),
    maxItems: num(raw, "maxItems"),
    minProperties: num(raw, "minProperties"),
    maxProperties: num(raw, "maxProperties"),
    allOf: schemas(raw.allOf),
    anyOf: schemas(raw.anyOf),
    oneOf: schemas(raw.oneOf),
    not: isObject(raw.not) ? parseSchema(raw.not) : undefined,
    preserveUnknownFields: raw["x-kubernetes-preserve-unknown-fields"] === true,
    embeddedResource: raw["x-kubernetes-embedded-resource"] === true,
    intOrString: raw["x-kubernetes-int-or-string"] === true,
    listType: str(raw, "x-kubernetes-list-type"),
    listMapKeys: strings(raw["x-kubernetes-list-map-keys"]),
    mapType: str(raw, "x-kubernetes-map-type"),
    validations: Array.isArray(raw["x-kubernetes-validations"])
      ? raw["x-kubernetes-validations"].filter(isObject).map(parseRule)
      : [],
  };
}

/**
 * The server's patterns are Go RE2; ECMAScript agrees on the ones CRDs use. Unicode mode first (it
 * reads `\p{L}` as RE2 does), then the legacy mode for patterns only it accepts (`[\w-]`).
 */
export function compilePattern(source: string): RegExp | undefined {
  for (const flags of ["u", ""]) {
    try {
      return new RegExp(source, flags);
    } catch {
      // try the next mode
    }
  }
  return undefined;
}

function parseProperties(raw: JsonObject): Map<string, SchemaNode> {
  const properties = new Map<string, SchemaNode>();
  for (const [name, value] of Object.entries(raw)) {
    if (isObject(value)) properties.set(name, parseSchema(value));
  }
  return properties;
}

function parseRule(raw: JsonObject): RuleSpec {
  return {
    rule: str(raw, "rule") ?? "",
    message: str(raw, "message"),
    messageExpression: str(raw, "messageExpression"),
    reason: str(raw, "reason"),
    fieldPath: str(raw, "fieldPath"),
    optionalOldSelf: typeof raw.optionalOldSelf === "boolean" ? raw.optionalOldSelf : undefined,
  };
}

function schemas(value: Json | undefined): SchemaNode[] {
  return Array.isArray(value) ? value.filter(isObject).map(parseSchema) : [];
}

function strings(value: Json | undefined): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

function str(raw: JsonObject, name: string): string | undefined {
  const value = raw[name];
  return typeof value === "string" ? value : undefined;
}

function num(raw: JsonObject, name: string): number | undefined {
  const value = raw[name];
  return typeof value === "number" ? value : undefined;
}
