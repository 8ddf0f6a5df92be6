// The static types of CEL rules, as the API server declares them from the schema
// (apiserver/schema/cel/model): `self` is an object type with the node's properties as fields, a map
// for additionalProperties, a list for arrays; integers are `int`, numbers `double`, and strings with
// format byte, duration, date or date-time are bytes, durations and timestamps. int-or-string and
// untyped x-kubernetes-preserve-unknown-fields nodes are `dyn`. Root and embedded resources also
// have apiVersion, kind and metadata (name and generateName only).

import type { SchemaNode } from "./schema.js";

export type CelT =
  | { readonly kind: "dyn" }
  | { readonly kind: "prim"; readonly name: string }
  | { readonly kind: "list"; readonly elem: CelT }
  | { readonly kind: "map"; readonly key: CelT; readonly value: CelT }
  | { readonly kind: "object"; readonly fields: ReadonlyMap<string, CelT> }
  | { readonly kind: "optional"; readonly inner: CelT };

const prim = (name: string): CelT => ({ kind: "prim", name });

export const DYN: CelT = { kind: "dyn" };
export const INT = prim("int");
export const UINT = prim("uint");
export const DOUBLE = prim("double");
export const STRING = prim("string");
export const BOOL = prim("bool");
export const BYTES = prim("bytes");
export const NULL = prim("null_type");
export const TYPE = prim("type");
export const TIMESTAMP = prim("google.protobuf.Timestamp");
export const DURATION = prim("google.protobuf.Duration");
/** The Kubernetes URL library's value (url('https://…')). */
export const URL_TYPE = prim("kubernetes.URL");

export const listOf = (elem: CelT): CelT => ({ kind: "list", elem });
export const mapOf = (key: CelT, value: CelT): CelT => ({ kind: "map", key, value });
export const optionalOf = (inner: CelT): CelT => ({ kind: "optional", inner });

/** The type's name as cel-go prints it in errors: `int`, `list(string)`, `map(string, int)`. */
export function typeName(t: CelT): string {
  switch (t.kind) {
    case "dyn":
      return "dyn";
    case "prim":
      return t.name;
    case "list":
      return `list(${typeName(t.elem)})`;
    case "map":
      return `map(${typeName(t.key)}, ${typeName(t.value)})`;
    case "object":
      return "object";
    case "optional":
      return `optional_type(${typeName(t.inner)})`;
  }
}

export function isNumeric(t: CelT): boolean {
  return t === INT || t === UINT || t === DOUBLE;
}

/**
 * Whether values of the two types may meet (in `==`, `in`, a ternary): equal shapes, or dyn (or
 * null, which a nullable field may hold) on either side.
 */
export function compatible(a: CelT, b: CelT): boolean {
  if (a.kind === "dyn" || b.kind === "dyn" || a === NULL || b === NULL) return true;
  if (a.kind === "prim" || b.kind === "prim")
    return a.kind === "prim" && b.kind === "prim" && a.name === b.name;
  if (a.kind === "list" && b.kind === "list") return compatible(a.elem, b.elem);
  if (a.kind === "map" && b.kind === "map") return compatible(a.key, b.key) && compatible(a.value, b.value);
  if (a.kind === "optional" && b.kind === "optional") return compatible(a.inner, b.inner);
  // An object and a map literal may be compared (self.spec == {…}); both are maps at runtime.
  return (a.kind === "object" || a.kind === "map") && (b.kind === "object" || b.kind === "map");
}

/** The common type of two compatible types: the more specific one, dyn when they differ. */
export function join(a: CelT, b: CelT): CelT {
  if (a.kind === "dyn" || a === NULL) return b;
  if (b.kind === "dyn" || b === NULL) return a;
  if (a.kind === "list" && b.kind === "list") return listOf(join(a.elem, b.elem));
  return typeName(a) === typeName(b) ? a : DYN;
}

const META_FIELDS: ReadonlyMap<string, CelT> = new Map([
  ["apiVersion", STRING],
  ["kind", STRING],
  [
    "metadata",
    {
      kind: "object",
      fields: new Map([
        ["name", STRING],
        ["generateName", STRING],
      ]),
    },
  ],
]);

/** The declared type of `self` at a schema node; `isResource` for the root (and embedded resources). */
export function declType(node: SchemaNode, isResource = false): CelT {
  if (node.intOrString) return DYN;
  switch (node.type) {
    case "object": {
      const values = node.additionalProperties;
      if (typeof values === "object") return mapOf(STRING, declType(values));
      const fields = new Map<string, CelT>();
      if (isResource || node.embeddedResource) for (const [name, t] of META_FIELDS) fields.set(name, t);
      for (const [name, property] of node.properties ?? []) {
        if (!fields.has(name) || !(isResource || node.embeddedResource)) fields.set(name, declType(property));
      }
      return { kind: "object", fields };
    }
    case "array":
      return listOf(node.items === undefined ? DYN : declType(node.items));
    case "string":
      return stringType(node.format);
    case "integer":
      return INT;
    case "number":
      return DOUBLE;
    case "boolean":
      return BOOL;
    default:
      return DYN;
  }
}

function stringType(format: string | undefined): CelT {
  switch (format) {
    case "byte":
      return BYTES;
    case "duration":
      return DURATION;
    case "date":
    case "date-time":
      return TIMESTAMP;
    default:
      return STRING;
  }
}

/** A function's typing: the result type for these operand types, undefined when no overload accepts them. */
export type Signature = (target: CelT | undefined, args: readonly CelT[]) => CelT | undefined;

/** A method with fixed operand types, such as `string.startsWith(string) -> bool`. */
export function method(target: CelT, params: readonly CelT[], result: CelT): Signature {
  return (t, args) =>
    t !== undefined && compatible(t, target) && matchArgs(args, params) ? result : undefined;
}

/** A global function with fixed operand types. */
export function func(params: readonly CelT[], result: CelT): Signature {
  return (t, args) => (t === undefined && matchArgs(args, params) ? result : undefined);
}

/** The first overload that accepts the operands. */
export function overloads(...signatures: Signature[]): Signature {
  return (t, args) => {
    for (const signature of signatures) {
      const result = signature(t, args);
      if (result !== undefined) return result;
    }
    return undefined;
  };
}

function matchArgs(args: readonly CelT[], params: readonly CelT[]): boolean {
  return args.length === params.length && args.every((arg, i) => compatible(arg, params[i] as CelT));
}
