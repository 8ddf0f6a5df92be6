/**
 * What a chat request's `tools`, `tool_choice` and `parallel_tool_calls` ask of the model, read by
 * the one function both sides call: the coordinator (to refuse a bad one before anything is reserved,
 * and to check the calls it receives) and the provider (to build the grammar it decodes under).
 */
import { BodyError } from "../chat/body-error.js";
import { readToolDefinitions } from "../chat/tool-input.js";
import { type CompiledSchema, compileSchema, SchemaError } from "../structured/schema.js";

/** A function the model may call, its parameters compiled. */
export interface ToolFunction {
  name: string;
  parameters: CompiledSchema;
}

/**
 * `auto`: the model answers in text or calls functions (after any text); `required`: it calls at
 * least one; `function`: it calls that one.
 */
export type ToolChoice = { type: "auto" } | { type: "required" } | { type: "function"; name: string };

export interface ToolUse {
  functions: ToolFunction[];
  choice: ToolChoice;
  /** Whether one turn may make several calls (where the template allows it). */
  parallel: boolean;
}

type Json = Record<string, unknown>;

/**
 * The tool use `body` asks for; undefined when it offers no functions or `tool_choice` is "none".
 * Throws BodyError naming the parameter (a schema error names the keyword inside the schema).
 */
export function readToolUse(body: Json): ToolUse | undefined {
  const choice = readChoice(body.tool_choice);
  const parallel = body.parallel_tool_calls;
  if (parallel !== undefined && parallel !== null && typeof parallel !== "boolean")
    throw new BodyError("'parallel_tool_calls' must be a boolean.", "parallel_tool_calls");
  const definitions = readToolDefinitions(body);
  if (definitions === undefined) {
    if (choice !== undefined && choice.type !== "auto" && body.tool_choice !== "none") {
      throw new BodyError("'tool_choice' is only allowed when 'tools' are specified.", "tool_choice");
    }
    return undefined;
  }
  const functions = definitions.map((d, i): ToolFunction => {
    const param = `tools[${i}].function.parameters`;
    // readToolDefinitions checked that each tool is an object with a function object.
    const strict = ((body.tools as Json[])[i] as { function: Json }).function.strict;
    if (strict !== undefined && strict !== null && typeof strict !== "boolean")
      throw new BodyError(`'tools[${i}].function.strict' must be a boolean.`, `tools[${i}].function.strict`);
    // No parameters: a function called with an empty object.
    const raw = Object.keys(d.parameters).length === 0 ? { type: "object", properties: {} } : d.parameters;
    let parameters: CompiledSchema;
    try {
      parameters = compileSchema(raw, { strict: strict === true });
    } catch (e) {
      if (!(e instanceof SchemaError)) throw e;
      const where = e.path === "" ? param : `${param}.${e.path}`;
      throw new BodyError(`Invalid schema for function '${d.name}': ${e.message} (at '${where}').`, where);
    }
    if (parameters.root.kind !== "object") {
      throw new BodyError(
        `The parameters of function '${d.name}' must be an object schema.`,
        `${param}.type`,
      );
    }
    return { name: d.name, parameters };
  });
  if (choice?.type === "function" && !functions.some((f) => f.name === choice.name)) {
    throw new BodyError(
      `'tool_choice' names the function '${choice.name}', which is not in 'tools'.`,
      "tool_choice.function.name",
    );
  }
  return { functions, choice: choice ?? { type: "auto" }, parallel: parallel !== false };
}

function readChoice(value: unknown): ToolChoice | undefined {
  if (value === undefined || value === null || value === "none" || value === "auto")
    return value === "auto" ? { type: "auto" } : undefined;
  if (value === "required") return { type: "required" };
  if (typeof value === "object" && !Array.isArray(value)) {
    const { type, function: fn } = value as Json;
    const name = (fn as Json | null)?.name;
    if (type === "function" && typeof name === "string") return { type: "function", name };
  }
  throw new BodyError(
    "'tool_choice' must be 'none', 'auto', 'required', or {\"type\": \"function\", \"function\": {\"name\": …}}.",
    "tool_choice",
  );
}

/** A request with both `tools` and a structured `response_format`: not served (one grammar a turn). */
export function toolsWithFormat(): BodyError {
  return new BodyError(
    "'response_format' cannot be combined with 'tools' on this network yet: send one or the other.",
    "response_format",
  );
}
