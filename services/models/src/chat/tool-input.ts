/**
 * The functions a chat request lets the model call (`tools`), as the prompt documents them. Read by
 * the one reader both sides use (readGenerationInput): the chat template writes the functions into
 * the prompt, so the coordinator's count of the prompt depends on them as the provider's does.
 * Their parameter schemas are compiled (and refused where the grammar cannot enforce them) by
 * readToolUse in @darkbloom/models/tools; here only the shape is read.
 */
import { BodyError } from "./body-error.js";

/** One function the model may call. */
export interface ToolDefinition {
  name: string;
  description?: string;
  /** The parameters' JSON Schema as the consumer sent it (an object schema; `{}` when absent). */
  parameters: Record<string, unknown>;
}

type Json = Record<string, unknown>;

/** The most functions one request may offer. */
export const MAX_TOOLS = 128;
/** OpenAI's function names: letters, digits, underscores and dashes, at most 64. */
const NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The functions of `body.tools`, or undefined when there are none or `tool_choice` is "none" (the
 * model then answers in text, and the template documents no functions).
 */
export function readToolDefinitions(body: Json): ToolDefinition[] | undefined {
  const tools = body.tools;
  if (tools === undefined || tools === null) return undefined;
  if (!Array.isArray(tools)) throw new BodyError("'tools' must be an array.", "tools");
  if (tools.length === 0) return undefined;
  if (tools.length > MAX_TOOLS)
    throw new BodyError(`'tools' may hold at most ${MAX_TOOLS} functions.`, "tools");
  const seen = new Set<string>();
  const out = tools.map((t: unknown, i): ToolDefinition => {
    const at = `tools[${i}]`;
    if (typeof t !== "object" || t === null || Array.isArray(t))
      throw new BodyError(`'${at}' must be an object.`, at);
    const { type, function: fn } = t as Json;
    if (type !== "function") {
      throw new BodyError(
        `Invalid value for '${at}.type': ${JSON.stringify(type)}. Supported values are: 'function'.`,
        `${at}.type`,
      );
    }
    if (typeof fn !== "object" || fn === null || Array.isArray(fn))
      throw new BodyError(`Missing required parameter: '${at}.function'.`, `${at}.function`);
    const { name, description, parameters } = fn as Json;
    if (typeof name !== "string" || !NAME.test(name)) {
      throw new BodyError(
        `'${at}.function.name' must be 1-64 letters, digits, underscores or dashes.`,
        `${at}.function.name`,
      );
    }
    if (seen.has(name))
      throw new BodyError(`'tools' names the function '${name}' twice.`, `${at}.function.name`);
    seen.add(name);
    if (description !== undefined && description !== null && typeof description !== "string")
      throw new BodyError(`'${at}.function.description' must be a string.`, `${at}.function.description`);
    if (parameters !== undefined && parameters !== null) {
      if (typeof parameters !== "object" || Array.isArray(parameters))
        throw new BodyError(
          `'${at}.function.parameters' must be a JSON Schema object.`,
          `${at}.function.parameters`,
        );
    }
    const tool: ToolDefinition = { name, parameters: (parameters as Json | null) ?? {} };
    if (typeof description === "string" && description !== "") tool.description = description;
    return tool;
  });
  return body.tool_choice === "none" ? undefined : out;
}
