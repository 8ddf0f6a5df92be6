import type { Json } from "./crd-schema/types.js";

export type { Json } from "./crd-schema/types.js";

/** A JSON object: every Kubernetes object, and most values inside one. */
export type JsonObject = { [key: string]: Json };

export function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Objects are stored immutably and handed out as copies, so a handler never edits what a watcher holds. */
export function clone<T extends Json | undefined>(value: T): T {
  return value === undefined ? value : structuredClone(value);
}

export function deepEqual(a: Json | undefined, b: Json | undefined): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((item, i) => deepEqual(item, b[i]));
  }
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => key in b && deepEqual(a[key], b[key]));
}

/** `metadata` of an object, created when absent (objects sent by clients may lack it). */
export function meta(object: JsonObject): JsonObject {
  if (!isObject(object.metadata)) object.metadata = {};
  return object.metadata as JsonObject;
}

export function str(value: Json | undefined): string | undefined {
  return typeof value === "string" ? value : undefined;
}

export function stringMap(value: Json | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (isObject(value)) for (const [k, v] of Object.entries(value)) if (typeof v === "string") out[k] = v;
  return out;
}

/** Follows a dotted path such as `.spec.replicas` (the form of CRD scale paths and printer columns). */
export function getDotted(object: JsonObject, path: string): Json | undefined {
  let current: Json | undefined = object;
  for (const part of path.replace(/^\./, "").split(".")) {
    if (!isObject(current)) return undefined;
    current = current[part];
  }
  return current;
}

export function setDotted(object: JsonObject, path: string, value: Json): void {
  const parts = path.replace(/^\./, "").split(".");
  let current = object;
  for (const part of parts.slice(0, -1)) {
    if (!isObject(current[part])) current[part] = {};
    current = current[part] as JsonObject;
  }
  current[parts[parts.length - 1]!] = value;
}

/** The real server's timestamps: RFC 3339 in UTC with second precision. */
export function nowTimestamp(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** Go's `%#v`-like rendering of a value, as it appears in the real server's validation messages. */
export function goValue(value: Json | undefined): string {
  if (value === undefined || value === null) return "null";
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value)) {
    if (value.every((v) => typeof v === "string"))
      return `[]string{${value.map((v) => JSON.stringify(v)).join(", ")}}`;
    return JSON.stringify(value);
  }
  const entries = Object.entries(value);
  if (entries.every(([, v]) => typeof v === "string")) {
    const body = entries
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`)
      .join(", ");
    return `map[string]string{${body}}`;
  }
  return JSON.stringify(value);
}
