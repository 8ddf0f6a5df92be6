// CEL for x-kubernetes-validations with @bufbuild/cel: compiling an expression (parse, the static
// check of cel-check.ts, plan) into a program, and converting stored JSON into the CEL values the
// server binds to `self`, typed by the schema: integers are ints (bigint), numbers doubles, strings
// with format byte/duration/date/date-time bytes, durations and timestamps. Fields the schema does
// not declare (kept by x-kubernetes-preserve-unknown-fields) are not visible, as on the server.

import { type CelError, type CelInput, type CelResult, celEnv, parse, plan } from "@bufbuild/cel";
import { create } from "@bufbuild/protobuf";
import { DurationSchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { CelCheckError, checkRule } from "./cel-check.js";
import { LIBRARY_FUNCS } from "./cel-library.js";
import type { CelT } from "./cel-types.js";
import { additional } from "./prune.js";
import { isObject, type SchemaNode } from "./schema.js";
import type { Json } from "./types.js";

const ENV = celEnv({ funcs: [...LIBRARY_FUNCS] });

export type Bindings = { [name: string]: CelInput };
export type Program = (bindings: Bindings) => CelResult;

export interface CompiledExpression {
  readonly program: Program;
  readonly type: CelT;
  readonly usesOldSelf: boolean;
}

/** Compiles an expression, or returns cel-go's wording of why it does not compile. */
export function compileExpression(
  source: string,
  variables: ReadonlyMap<string, CelT>,
): CompiledExpression | { error: string } {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(source);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    const at = /^<input>:(\d+):(\d+): (.*)$/s.exec(message);
    if (at === null) return { error: `ERROR: <input>: Syntax error: ${message}` };
    const [line, column] = [Number(at[1]), Number(at[2])];
    return { error: located(source, line, column - 1, `Syntax error: ${at[3]}`) };
  }
  try {
    const { type, usesOldSelf } = checkRule(parsed, variables);
    const run = plan(ENV, parsed);
    return { program: (bindings) => run(bindings), type, usesOldSelf };
  } catch (e) {
    if (!(e instanceof CelCheckError)) return { error: `ERROR: <input>: ${String(e)}` };
    const before = source.slice(0, e.offset).split("\n");
    return { error: located(source, before.length, [...(before.at(-1) ?? "")].length, e.message) };
  }
}

/** cel-go's issue format: position, message, then the source line with a caret under the column. */
function located(source: string, line: number, column: number, message: string): string {
  const text = (source.split("\n")[line - 1] ?? "").replaceAll("\t", " ");
  return `ERROR: <input>:${line}:${column + 1}: ${message}\n | ${text}\n | ${".".repeat(column)}^`;
}

/** An evaluation error as the server words it (cel-go says "no such key" for an absent field). */
export function evaluationError(error: CelError): string {
  return error.message.replace(/^field not found: /, "no such key: ");
}

/** The CEL value of a stored JSON value at a schema node; `isResource` for the root and embedded resources. */
export function toCel(value: Json, node: SchemaNode | undefined, isResource = false): CelInput {
  if (value === null) return null;
  if (node === undefined || node.intOrString || node.type === undefined) return dynamic(value);
  if (Array.isArray(value)) return value.map((item) => toCel(item, node.items));
  if (isObject(value)) return objectToCel(value, node, isResource || node.embeddedResource);
  if (typeof value === "number")
    return node.type === "integer" && Number.isInteger(value) ? BigInt(value) : value;
  if (typeof value === "string") return stringToCel(value, node.format);
  return value;
}

function objectToCel(value: { [key: string]: Json }, node: SchemaNode, isResource: boolean): CelInput {
  const map = new Map<string, CelInput>();
  const values = additional(node);
  if (values !== undefined) {
    for (const [k, v] of Object.entries(value)) map.set(k, toCel(v, values));
    return map;
  }
  for (const [k, property] of node.properties ?? []) {
    const v = value[k];
    if (v !== undefined) map.set(k, toCel(v, property, property.embeddedResource));
  }
  if (isResource) {
    for (const k of ["apiVersion", "kind"]) {
      const v = value[k];
      if (typeof v === "string") map.set(k, v);
    }
    const metadata = value.metadata;
    if (isObject(metadata)) {
      const meta = new Map<string, CelInput>();
      for (const k of ["name", "generateName"]) {
        const v = metadata[k];
        if (typeof v === "string") meta.set(k, v);
      }
      map.set("metadata", meta);
    }
  }
  return map;
}

function stringToCel(value: string, format: string | undefined): CelInput {
  switch (format) {
    case "byte":
      return new Uint8Array(Buffer.from(value, "base64"));
    case "duration":
      return parseDuration(value) ?? value;
    case "date":
    case "date-time": {
      const date = new Date(value);
      return Number.isNaN(date.getTime()) ? value : timestampFromDate(date);
    }
    default:
      return value;
  }
}

/** JSON under a dyn type: whole numbers are ints, as the server's decoder makes them int64. */
function dynamic(value: Json): CelInput {
  if (Array.isArray(value)) return value.map(dynamic);
  if (isObject(value)) return new Map(Object.entries(value).map(([k, v]) => [k, dynamic(v)]));
  if (typeof value === "number" && Number.isInteger(value)) return BigInt(value);
  return value;
}

const UNIT_NANOS: Record<string, number> = {
  ns: 1,
  us: 1e3,
  µs: 1e3,
  μs: 1e3,
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

/** Go's time.ParseDuration ("1h30m", "-1.5s", "0"). */
function parseDuration(text: string): CelInput | undefined {
  const match = /^([-+]?)((?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+|0)$/.exec(text);
  if (match === null) return undefined;
  let nanos = 0n;
  for (const part of (match[2] ?? "").matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) {
    nanos += BigInt(Math.round(Number(part[1]) * (UNIT_NANOS[part[2] ?? ""] ?? 0)));
  }
  if (match[1] === "-") nanos = -nanos;
  return create(DurationSchema, { seconds: nanos / 1_000_000_000n, nanos: Number(nanos % 1_000_000_000n) });
}
