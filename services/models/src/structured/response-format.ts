/**
 * The request's `response_format`, read by the one function the coordinator (to refuse a bad one
 * before anything is reserved, and to check the output) and the provider (to build the grammar it
 * decodes under) both call.
 */

import { BodyError } from "../chat/generation-input.js";
import { jsonObjectGrammar, schemaGrammar } from "./gbnf.js";
import { type CompiledSchema, compileSchema, SchemaError } from "./schema.js";
import { schemaViolation } from "./validate.js";

/** A structured output a request asked for (`response_format` other than "text"). */
export type StructuredFormat =
  | { type: "json_object" }
  | { type: "json_schema"; name: string; strict: boolean; schema: CompiledSchema };

type Json = Record<string, unknown>;

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The structured output `body.response_format` asks for; undefined for none or `{type: "text"}`.
 * Throws BodyError naming the parameter (a schema error names the keyword inside the schema).
 */
export function readResponseFormat(body: Json): StructuredFormat | undefined {
  const rf = body.response_format;
  if (rf === undefined || rf === null) return undefined;
  if (typeof rf !== "object" || Array.isArray(rf)) {
    throw new BodyError("'response_format' must be an object.", "response_format");
  }
  const { type } = rf as Json;
  if (type === "text") return undefined;
  if (type === "json_object") return { type };
  if (type !== "json_schema") {
    throw new BodyError(
      `Invalid value for 'response_format.type': ${JSON.stringify(type)}. Supported values are: 'text', 'json_object' and 'json_schema'.`,
      "response_format.type",
    );
  }
  const spec = (rf as Json).json_schema;
  if (typeof spec !== "object" || spec === null || Array.isArray(spec)) {
    throw new BodyError(
      "Missing required parameter: 'response_format.json_schema'.",
      "response_format.json_schema",
    );
  }
  const { name, strict, schema } = spec as Json;
  if (typeof name !== "string" || !NAME.test(name)) {
    throw new BodyError(
      "'response_format.json_schema.name' must be 1-64 letters, digits, underscores or dashes.",
      "response_format.json_schema.name",
    );
  }
  if (strict !== undefined && strict !== null && typeof strict !== "boolean") {
    throw new BodyError(
      "'response_format.json_schema.strict' must be a boolean.",
      "response_format.json_schema.strict",
    );
  }
  const param = "response_format.json_schema.schema";
  try {
    // No schema: any JSON value, as OpenAI reads it.
    const compiled = compileSchema(schema ?? {}, { strict: strict === true });
    return { type: "json_schema", name, strict: strict === true, schema: compiled };
  } catch (e) {
    if (!(e instanceof SchemaError)) throw e;
    const where = e.path === "" ? param : `${param}.${e.path}`;
    throw new BodyError(`Invalid schema for response_format '${name}': ${e.message} (at '${where}').`, where);
  }
}

/** The GBNF grammar the provider decodes a structured output under. */
export function formatGrammar(format: StructuredFormat): string {
  return format.type === "json_object" ? jsonObjectGrammar() : schemaGrammar(format.schema);
}

/**
 * Why a choice's complete text is not the structured output asked for, or undefined when it is: JSON
 * (an object for `json_object`) that the schema accepts. Only text that ended by itself can be held
 * to it; a choice cut by max_tokens or a stop string is legitimately incomplete.
 */
export function formatViolation(format: StructuredFormat, text: string): string | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return "the output is not JSON";
  }
  if (format.type === "json_object") {
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? undefined
      : "the output is not a JSON object";
  }
  return schemaViolation(format.schema, value);
}
