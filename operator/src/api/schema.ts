// A small schema builder, in the spirit of zod, for the operator's custom resources: each value carries
// both the OpenAPI v3 structural schema node the CRD publishes and, at the type level, the TypeScript
// type of the stored object. The CRDs are generated from these values, so the API server validates
// exactly what the controllers' types promise.

/** A JSON value, as stored by the API server. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One CEL rule of `x-kubernetes-validations`. */
export interface ValidationRule {
  rule: string;
  message?: string;
  messageExpression?: string;
  reason?: "FieldValueInvalid" | "FieldValueForbidden" | "FieldValueRequired" | "FieldValueDuplicate";
  /** Where the failure is reported, relative to the node holding the rule (".instanceStale"). */
  fieldPath?: string;
}

/** An apiextensions.k8s.io/v1 JSONSchemaProps node, with the keys as they appear in the CRD. */
export interface JSONSchemaProps {
  type?: "object" | "array" | "string" | "integer" | "number" | "boolean";
  description?: string;
  properties?: Record<string, JSONSchemaProps>;
  required?: string[];
  default?: Json;
  enum?: Json[];
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  format?: string;
  items?: JSONSchemaProps;
  additionalProperties?: JSONSchemaProps;
  nullable?: boolean;
  "x-kubernetes-int-or-string"?: true;
  "x-kubernetes-preserve-unknown-fields"?: true;
  "x-kubernetes-list-type"?: "atomic" | "set" | "map";
  "x-kubernetes-list-map-keys"?: string[];
  "x-kubernetes-validations"?: ValidationRule[];
}

declare const inferred: unique symbol;

/**
 * A schema node whose stored value has type `T`; `D` says whether the API server fills it in when it
 * is absent (a `default`), which makes the field required in the stored type.
 */
export interface Schema<T, D extends boolean = boolean> {
  readonly node: JSONSchemaProps;
  /** Type-level only: never set at runtime. */
  readonly [inferred]?: { type: T; defaulted: D };
}

/** The TypeScript type of the value a schema describes, as stored (defaults applied). */
export type Infer<S> = S extends Schema<infer T, boolean> ? T : never;

/** Every field is documented: the CRD's documentation (`kubectl explain`) comes from these. */
export interface FieldOptions {
  description: string;
  rules?: readonly ValidationRule[];
}

type Defaulted<O> = O extends { default: unknown } ? true : false;

export interface StringOptions extends FieldOptions {
  default?: string;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  format?: "date-time";
}

export interface IntegerOptions extends FieldOptions {
  default?: number;
  minimum?: number;
  maximum?: number;
  format?: "int32" | "int64";
}

export interface BooleanOptions extends FieldOptions {
  default?: boolean;
}

export interface EnumOptions<V extends string> extends FieldOptions {
  default?: V;
}

export interface IntOrStringOptions extends FieldOptions {
  /** Applies to string values only, as in OpenAPI. */
  pattern?: string;
}

export interface ArrayOptions<K extends string> extends FieldOptions {
  minItems?: number;
  maxItems?: number;
  listType?: "atomic" | "set" | "map";
  listMapKeys?: readonly K[];
}

export interface ObjectOptions<K extends string> extends FieldOptions {
  required?: readonly K[];
  /** Only `{}`: the object is created when absent so that its own fields' defaults apply. */
  default?: Readonly<Record<string, never>>;
}

type Shape = { readonly [key: string]: Schema<unknown> };
type DefaultedKeys<P extends Shape> = {
  [K in keyof P]: P[K] extends Schema<unknown, true> ? K : never;
}[keyof P];
type RequiredOf<O> = O extends { required: readonly (infer K)[] } ? K : never;
type Simplify<T> = { [K in keyof T]: T[K] } & {};

/** Required and defaulted fields are always present in a stored object; the others may be absent. */
export type ObjectOf<P extends Shape, R> = Simplify<
  {
    -readonly [K in keyof P as K extends R | DefaultedKeys<P> ? K : never]: Infer<P[K]>;
  } & {
    -readonly [K in keyof P as K extends R | DefaultedKeys<P> ? never : K]?: Infer<P[K]>;
  }
>;

function schema<T, D extends boolean>(node: JSONSchemaProps): Schema<T, D> {
  return { node };
}

/** The node's common keys, then its own; absent options leave no key (the YAML stays minimal). */
function node(options: FieldOptions, own: JSONSchemaProps): JSONSchemaProps {
  const defined = Object.fromEntries(Object.entries(own).filter(([, value]) => value !== undefined));
  const rules = options.rules?.length ? { "x-kubernetes-validations": [...options.rules] } : {};
  return { description: options.description, ...(defined as JSONSchemaProps), ...rules };
}

function string<const O extends StringOptions>(options: O): Schema<string, Defaulted<O>> {
  return schema(
    node(options, {
      type: "string",
      format: options.format,
      pattern: options.pattern,
      minLength: options.minLength,
      maxLength: options.maxLength,
      default: options.default,
    }),
  );
}

function integer<const O extends IntegerOptions>(options: O): Schema<number, Defaulted<O>> {
  return schema(
    node(options, {
      type: "integer",
      format: options.format,
      minimum: options.minimum,
      maximum: options.maximum,
      default: options.default,
    }),
  );
}

function boolean<const O extends BooleanOptions>(options: O): Schema<boolean, Defaulted<O>> {
  return schema(node(options, { type: "boolean", default: options.default }));
}

function enumOf<const V extends readonly [string, ...string[]], const O extends EnumOptions<V[number]>>(
  values: V,
  options: O,
): Schema<V[number], Defaulted<O>> {
  return schema(node(options, { type: "string", enum: [...values], default: options.default }));
}

/** An integer or a string (a resource quantity, a port name). */
function intOrString(options: IntOrStringOptions): Schema<number | string, false> {
  return schema(node(options, { "x-kubernetes-int-or-string": true, pattern: options.pattern }));
}

/**
 * An object the API server stores as given: an embedded Kubernetes type (affinity, a toleration)
 * that the pod's own validation checks, so the CRD does not copy its schema.
 */
function preserveUnknown<T>(options: FieldOptions): Schema<T, false> {
  return schema(node(options, { type: "object", "x-kubernetes-preserve-unknown-fields": true }));
}

function array<I extends Schema<unknown>, const O extends ArrayOptions<keyof Infer<I> & string>>(
  items: I,
  options: O,
): Schema<Infer<I>[], false> {
  const keys = options.listMapKeys ? [...options.listMapKeys] : undefined;
  // The API server refuses a list-map whose keys an item may lack: each must be required or defaulted.
  for (const key of keys ?? []) {
    const present = items.node.required?.includes(key) || items.node.properties?.[key]?.default !== undefined;
    if (!present) throw new Error(`list-map key "${key}" must be required or defaulted in the items`);
  }
  return schema(
    node(options, {
      type: "array",
      items: items.node,
      minItems: options.minItems,
      maxItems: options.maxItems,
      "x-kubernetes-list-type": options.listType,
      "x-kubernetes-list-map-keys": keys,
    }),
  );
}

/** An object with arbitrary keys, every value described by `values` (`additionalProperties`). */
function map<V extends Schema<unknown>>(
  values: V,
  options: FieldOptions,
): Schema<Record<string, Infer<V>>, false> {
  return schema(node(options, { type: "object", additionalProperties: values.node }));
}

function object<P extends Shape, const O extends ObjectOptions<keyof P & string>>(
  properties: P,
  options: O,
): Schema<ObjectOf<P, RequiredOf<O>>, Defaulted<O>> {
  const required = options.required ? [...options.required] : [];
  const nodes: Record<string, JSONSchemaProps> = {};
  for (const [key, value] of Object.entries(properties)) nodes[key] = value.node;
  // A default must itself be valid: `{}` is only when every required field has a default of its own.
  if (options.default !== undefined) {
    const missing = required.filter((key) => nodes[key]?.default === undefined);
    if (missing.length > 0) throw new Error(`default {} lacks the required ${missing.join(", ")}`);
  }
  return schema(
    node(options, {
      type: "object",
      properties: nodes,
      required: required.length > 0 ? required : undefined,
      default: options.default,
    }),
  );
}

/** The schema builders: `s.object({...}, {...})`, `s.string({...})`… */
export const s = {
  string,
  integer,
  boolean,
  enum: enumOf,
  intOrString,
  preserveUnknown,
  array,
  map,
  object,
};
