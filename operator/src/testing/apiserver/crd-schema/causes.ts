// The API server's field errors (k8s.io/apimachinery/pkg/util/validation/field), worded as its
// ErrorBody() words them: clients and tests match on these strings, so the Go formatting of the bad
// value (%q for strings, %v for numbers, %#v for maps and lists) is reproduced.

import type { FieldCause, Json } from "./types.js";

/** A bad value the server prints verbatim, such as Go's %#v of a struct that has no JSON form. */
export class GoRepr {
  constructor(readonly text: string) {}
}

/** A bad value the server leaves out of the message (field.OmitValueType). */
export const OMIT = Symbol("omit");

export type BadValue = Json | GoRepr | typeof OMIT;

export const REASON = {
  required: "FieldValueRequired",
  invalid: "FieldValueInvalid",
  typeInvalid: "FieldValueTypeInvalid",
  notSupported: "FieldValueNotSupported",
  forbidden: "FieldValueForbidden",
  tooLong: "FieldValueTooLong",
  tooMany: "FieldValueTooMany",
  duplicate: "FieldValueDuplicate",
} as const;

export function required(field: string, detail = ""): FieldCause {
  return { reason: REASON.required, message: withDetail("Required value", detail), field };
}

export function forbidden(field: string, detail: string): FieldCause {
  return { reason: REASON.forbidden, message: withDetail("Forbidden", detail), field };
}

export function invalid(field: string, value: BadValue, detail: string): FieldCause {
  return { reason: REASON.invalid, message: withValue("Invalid value", value, detail), field };
}

/** A value of the wrong type; the server words it as "Invalid value" too. */
export function typeInvalid(field: string, value: BadValue, detail: string): FieldCause {
  return { reason: REASON.typeInvalid, message: withValue("Invalid value", value, detail), field };
}

export function notSupported(field: string, value: BadValue, supported: readonly string[]): FieldCause {
  const detail = supported.length > 0 ? `supported values: ${supported.map(quote).join(", ")}` : "";
  return { reason: REASON.notSupported, message: withValue("Unsupported value", value, detail), field };
}

export function tooLong(field: string, maxLength: number): FieldCause {
  const detail = `may not be more than ${maxLength} ${maxLength === 1 ? "byte" : "bytes"}`;
  return { reason: REASON.tooLong, message: withDetail("Too long", detail), field };
}

export function tooMany(field: string, actual: number, max: number): FieldCause {
  const detail = `must have at most ${max} ${max === 1 ? "item" : "items"}`;
  return { reason: REASON.tooMany, message: withValue("Too many", actual, detail), field };
}

export function duplicate(field: string, value: BadValue): FieldCause {
  return { reason: REASON.duplicate, message: withValue("Duplicate value", value, ""), field };
}

function withDetail(type: string, detail: string): string {
  return detail === "" ? type : `${type}: ${detail}`;
}

function withValue(type: string, value: BadValue, detail: string): string {
  return withDetail(value === OMIT ? type : `${type}: ${goValue(value)}`, detail);
}

/** The bad value as ErrorBody prints it: simple types with %v or %q, anything else with %#v. */
function goValue(value: Json | GoRepr): string {
  if (value instanceof GoRepr) return value.text;
  if (value === null) return "null";
  if (typeof value === "string") return quote(value);
  if (typeof value === "number") return goNumber(value);
  if (typeof value === "boolean") return String(value);
  return goSharpV(value);
}

/** Go's %q (strconv.Quote); JSON escaping agrees on everything a test writes. */
export function quote(text: string): string {
  return JSON.stringify(text);
}

/** A JSON number as the server holds it: int64 when integral, float64 otherwise. */
export function goNumber(value: number): string {
  return Number.isInteger(value) && Math.abs(value) < 1e21 ? BigInt(value).toString() : goFloat(value);
}

/** Go's %v of a float64: shortest digits, exponent form below 1e-4 and from 1e6 on (strconv 'g', -1). */
export function goFloat(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (!Number.isFinite(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value === 0) return "0";
  const [mantissa = "", exponentText = "0"] = value.toExponential().split("e");
  const exponent = Number(exponentText);
  if (exponent >= -4 && exponent < 6) return String(value);
  const magnitude = String(Math.abs(exponent)).padStart(2, "0");
  return `${mantissa}e${exponent < 0 ? "-" : "+"}${magnitude}`;
}

/** Go's %#v of a decoded JSON value (map[string]interface {}, []interface {}). */
export function goSharpV(value: Json): string {
  if (value === null) return "interface {}(nil)";
  if (Array.isArray(value)) return `[]interface {}{${value.map(goSharpV).join(", ")}}`;
  if (typeof value === "object") {
    const entries = Object.keys(value)
      .sort()
      .map((k) => `${quote(k)}:${goSharpV(value[k] as Json)}`);
    return `map[string]interface {}{${entries.join(", ")}}`;
  }
  if (typeof value === "string") return quote(value);
  if (typeof value === "number") return goNumber(value);
  return String(value);
}
