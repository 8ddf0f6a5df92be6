import { isObject, type Json } from "./json.js";
import type { ScalarSchema, Schema } from "./schema.js";

/** What the real server's strict JSON decoder finds in a built-in object: unknown fields and the first type error. */
export interface DecodeResult {
  /** Paths such as `spec.template.spec.containers[0].foo`. */
  unknown: string[];
  /** The same, as the keys and indexes leading there (to drop the fields, as decoding into Go types does). */
  unknownSegments: (string | number)[][];
  /** Go's `json: cannot unmarshal …` message, when a value has the wrong JSON type. */
  typeError?: string;
}

const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function jsonType(value: Json): string {
  if (Array.isArray(value)) return "array";
  if (typeof value === "boolean") return "bool";
  return typeof value === "number" ? "number" : typeof value === "string" ? "string" : "object";
}

const GO_TYPES: Record<ScalarSchema["type"], string> = {
  string: "string",
  integer: "int32",
  number: "float64",
  boolean: "bool",
  "int-or-string": "intstr.IntOrString",
  quantity: "resource.Quantity",
  time: "v1.Time",
  bytes: "[]uint8",
};

/** Why a scalar does not decode, or undefined when it does. */
function scalarError(schema: ScalarSchema, value: Json): string | undefined {
  switch (schema.type) {
    case "string":
      return typeof value === "string" ? undefined : "type";
    case "integer":
      return typeof value === "number" && Number.isInteger(value) ? undefined : "type";
    case "number":
      return typeof value === "number" ? undefined : "type";
    case "boolean":
      return typeof value === "boolean" ? undefined : "type";
    case "int-or-string":
    case "quantity":
      return typeof value === "string" || typeof value === "number" ? undefined : "type";
    case "time":
      if (typeof value !== "string") return "type";
      return TIME.test(value)
        ? undefined
        : `parsing time ${JSON.stringify(value)} as "2006-01-02T15:04:05Z07:00": cannot parse ${JSON.stringify(value)} as "2006"`;
    case "bytes": {
      if (typeof value !== "string") return "type";
      if (BASE64.test(value)) return undefined;
      const bad = [...value].findIndex((c) => !/[A-Za-z0-9+/=]/.test(c));
      return `illegal base64 data at input byte ${bad >= 0 ? bad : value.length - (value.length % 4)}`;
    }
  }
}

/** Walks an object against its schema, collecting unknown fields and the first type error. */
export function decode(value: Json, schema: Schema): DecodeResult {
  const result: DecodeResult = { unknown: [], unknownSegments: [] };
  walk(value, schema, "", [], "", result);
  return result;
}

function walk(
  value: Json,
  schema: Schema,
  path: string,
  segments: (string | number)[],
  struct: string,
  result: DecodeResult,
): void {
  if (value === null || schema.kind === "any") return;
  const typeError = (goType: string) => {
    result.typeError ??= `json: cannot unmarshal ${jsonType(value)} into Go struct field ${struct}.${path} of type ${goType}`;
  };
  switch (schema.kind) {
    case "scalar": {
      const problem = scalarError(schema, value);
      if (problem === "type") typeError(GO_TYPES[schema.type]);
      else if (problem) result.typeError ??= problem;
      return;
    }
    case "object":
      if (!isObject(value)) {
        typeError(`v1.${schema.name}`);
        return;
      }
      for (const [key, child] of Object.entries(value)) {
        const childPath = path ? `${path}.${key}` : key;
        const childSchema = schema.fields[key];
        if (childSchema) walk(child, childSchema, childPath, [...segments, key], schema.name, result);
        else if (!schema.open) {
          result.unknown.push(childPath);
          result.unknownSegments.push([...segments, key]);
        }
      }
      return;
    case "map":
      if (!isObject(value)) {
        typeError("map[string]string");
        return;
      }
      for (const [key, child] of Object.entries(value)) {
        walk(child, schema.values, `${path}[${key}]`, [...segments, key], struct, result);
      }
      return;
    case "list":
      if (!Array.isArray(value)) {
        typeError("[]");
        return;
      }
      value.forEach((item, i) => {
        walk(item, schema.items, `${path}[${i}]`, [...segments, i], struct, result);
      });
      return;
  }
}

/** Field paths present in `before` and absent from `after`: what pruning a custom resource dropped. */
export function droppedPaths(before: Json, after: Json | undefined, path = ""): string[] {
  if (after === undefined) return [path];
  if (isObject(before) && isObject(after)) {
    return Object.entries(before).flatMap(([key, child]) =>
      droppedPaths(child, after[key], path ? `${path}.${key}` : key),
    );
  }
  if (Array.isArray(before) && Array.isArray(after)) {
    return before.flatMap((item, i) => droppedPaths(item, after[i], `${path}[${i}]`));
  }
  return [];
}

/** Deletes the fields at the given key/index paths (all of them object fields, so indexes stay valid). */
export function dropPaths(object: Json, paths: (string | number)[][]): void {
  for (const segments of paths) {
    let current: Json | undefined = object;
    for (const s of segments.slice(0, -1)) {
      current = Array.isArray(current)
        ? current[s as number]
        : isObject(current)
          ? current[s as string]
          : undefined;
    }
    if (isObject(current)) delete current[segments[segments.length - 1] as string];
  }
}
