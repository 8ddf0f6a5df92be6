import type { Json } from "./json.js";

/**
 * The shape of a kind, as far as the server's generic machinery needs it: which fields exist (strict
 * field validation), their JSON types (decoding errors), and how lists and maps merge (strategic merge
 * patch's patchMergeKey/patchStrategy and server-side apply's listType/listMapKeys/mapType). The real
 * server reads all of this from the Go types and their OpenAPI; here one table serves the three uses.
 */
export type Schema = ScalarSchema | ObjectSchema | MapSchema | ListSchema | AnySchema;

export interface ScalarSchema {
  readonly kind: "scalar";
  /** `quantity` and `int-or-string` accept a string or a number; `bytes` is base64; `time` is RFC 3339. */
  readonly type:
    | "string"
    | "integer"
    | "number"
    | "boolean"
    | "int-or-string"
    | "quantity"
    | "time"
    | "bytes";
}

export interface ObjectSchema {
  readonly kind: "object";
  /** The Go struct's name, for decoding errors ("Go struct field LeaseSpec.spec.x"). */
  readonly name: string;
  readonly fields: Readonly<Record<string, Schema>>;
  /** Unknown fields are kept and never reported (statuses and loosely modelled parts of this fake). */
  readonly open?: boolean;
  /** Server-side apply owns it as one value (`x-kubernetes-map-type: atomic`). */
  readonly atomic?: boolean;
}

/** `map[string]X`: keys are data, not fields. */
export interface MapSchema {
  readonly kind: "map";
  readonly values: Schema;
  readonly atomic?: boolean;
}

export interface ListSchema {
  readonly kind: "list";
  readonly items: Schema;
  /** Strategic merge patch merges items by this key (patchStrategy "merge"); absent: replace. */
  readonly mergeKey?: string;
  /** Server-side apply keys (listType "map"); absent and not `set`: atomic. */
  readonly keys?: readonly string[];
  /** Key fields' defaults, so an applied item without them matches the defaulted live item. */
  readonly keyDefaults?: Readonly<Record<string, Json>>;
  /** A list of scalars merged as a set (listType "set", patchStrategy "merge"). */
  readonly set?: boolean;
}

/** Anything goes (RawExtension, x-kubernetes-preserve-unknown-fields, parts this fake does not model). */
export interface AnySchema {
  readonly kind: "any";
}

export const ANY: AnySchema = { kind: "any" };
export const STRING: ScalarSchema = { kind: "scalar", type: "string" };
export const INT: ScalarSchema = { kind: "scalar", type: "integer" };
export const NUMBER: ScalarSchema = { kind: "scalar", type: "number" };
export const BOOL: ScalarSchema = { kind: "scalar", type: "boolean" };
export const INT_OR_STRING: ScalarSchema = { kind: "scalar", type: "int-or-string" };
export const QUANTITY: ScalarSchema = { kind: "scalar", type: "quantity" };
export const TIME: ScalarSchema = { kind: "scalar", type: "time" };
export const BYTES: ScalarSchema = { kind: "scalar", type: "bytes" };

export function object(
  name: string,
  fields: Record<string, Schema>,
  options: { open?: boolean; atomic?: boolean } = {},
): ObjectSchema {
  return { kind: "object", name, fields, ...options };
}

/** An object whose fields are all of the same schema, listed by name (loosely modelled parts). */
export function fieldsOf(names: string, schema: Schema): Record<string, Schema> {
  return Object.fromEntries(names.split(/\s+/).map((n) => [n, schema]));
}

export function map(values: Schema, options: { atomic?: boolean } = {}): MapSchema {
  return { kind: "map", values, ...options };
}

export function atomicList(items: Schema): ListSchema {
  return { kind: "list", items };
}

export function keyedList(
  items: Schema,
  mergeKey: string,
  keys: readonly string[] = [mergeKey],
  keyDefaults?: Record<string, Json>,
): ListSchema {
  return { kind: "list", items, mergeKey, keys, ...(keyDefaults ? { keyDefaults } : {}) };
}

export function stringSet(): ListSchema {
  return { kind: "list", items: STRING, set: true };
}

/** The schema of `field` inside `schema`, ANY when unknown there. */
export function fieldSchema(schema: Schema, field: string): Schema {
  if (schema.kind === "object") return schema.fields[field] ?? ANY;
  if (schema.kind === "map") return schema.values;
  return ANY;
}

export function itemSchema(schema: Schema): Schema {
  return schema.kind === "list" ? schema.items : ANY;
}
