import { schemaViolation } from "../structured/validate.js";
import type { SplitOutput } from "./parse.js";
import type { ToolUse } from "./tool-use.js";

/**
 * Why a choice that ended by itself is not what the tool grammar allows, or undefined when it is:
 * well-formed calls of offered functions whose arguments their schemas accept (after any text, with
 * `auto`), or text alone (`auto`). A choice cut by max_tokens or a stop string may stop anywhere, and
 * is only held to being well-formed so far.
 */
export function toolCallViolation(
  use: ToolUse,
  output: SplitOutput,
  endedByItself: boolean,
): string | undefined {
  if (output.state === "malformed") return output.error ?? "the calls are malformed";
  if (!endedByItself) return undefined;
  if (output.state === "partial") return "the calls end unfinished";
  if (output.state === "text") {
    return use.choice.type === "auto" ? undefined : "no function was called where tool_choice requires one";
  }
  if (
    use.choice.type === "function" &&
    output.calls.some((c) => c.name !== (use.choice as { name: string }).name)
  )
    return "a call names another function than tool_choice";
  if (output.calls.length > 1 && !use.parallel) return "several calls where parallel_tool_calls is false";
  for (const [k, call] of output.calls.entries()) {
    const fn = use.functions.find((f) => f.name === call.name);
    if (fn === undefined) return `call ${k} names no offered function`;
    let value: unknown;
    try {
      value = JSON.parse(call.arguments);
    } catch {
      return `call ${k}'s arguments are not JSON`;
    }
    const why = schemaViolation(fn.parameters, value);
    if (why !== undefined) return `call ${k} (${call.name}): ${why}`;
  }
  return undefined;
}
