import { shownToolCalls, splitToolOutput, type ToolUse, toolCallViolation } from "@darkbloom/models/tools";
import { type SignedChoice, shownChoice } from "@darkbloom/protocol/verifiable-response";
import type { ValidatedRequest } from "./request-validation.js";
import { STRUCTURED_OUTPUT_INVALID, structuredOutputViolation } from "./structured-output.js";
import { TOOL_CALLS_INVALID, type ToolOutputContext } from "./tool-calls.js";

/** A completed response as it will be shown, or why its provider broke what the request asked. */
export type ShownOutput =
  | { ok: true; choices: SignedChoice[]; finishReasons: Map<number, string> }
  | { ok: false; code: string; message: string; consumerMessage: string };

/**
 * The choices of a completed response as the consumer will see them (and the provider must have
 * signed): the text received, or for a request with `tools` the content before the calls and the
 * calls, the turn finished with "tool_calls" when it called functions. The output is held to what
 * the request's grammar allows: a structured output must be JSON its schema accepts, calls must be
 * well formed, of offered functions, with arguments their schemas accept. A provider decoding under
 * the grammar cannot produce anything else, so one whose output does not hold is cut. Choices cut by
 * max_tokens, or (where the request has stop strings) ending "stop", may be incomplete by right.
 */
export function shownOutput(
  request: Pick<ValidatedRequest, "format" | "tools" | "hasStop">,
  tools: ToolOutputContext | undefined,
  texts: readonly string[],
  finishReasons: ReadonlyMap<number, string>,
): ShownOutput {
  const malformed = request.hasStop
    ? undefined
    : structuredOutputViolation(request.format, texts, finishReasons);
  if (malformed !== undefined) {
    return {
      ok: false,
      code: STRUCTURED_OUTPUT_INVALID,
      message: malformed,
      consumerMessage: "The provider's output broke response_format.",
    };
  }
  const shown = new Map(finishReasons);
  if (request.tools === undefined || tools === undefined) {
    return {
      ok: true,
      choices: texts.map((text, i) => shownChoice(i, text, [], shown.get(i) ?? "")),
      finishReasons: shown,
    };
  }
  const use: ToolUse = request.tools;
  const choices: SignedChoice[] = [];
  for (const [i, text] of texts.entries()) {
    const split = splitToolOutput(text, tools.syntax, tools.names);
    const reason = finishReasons.get(i) ?? "stop";
    const ended = reason === "stop" || reason === "tool_calls";
    const why = toolCallViolation(use, split, ended && !request.hasStop);
    if (why !== undefined) {
      return {
        ok: false,
        code: TOOL_CALLS_INVALID,
        message: `choice ${i}: ${why}`,
        consumerMessage: "The provider's tool calls broke the request's tools.",
      };
    }
    const finish = ended
      ? split.state === "complete" && split.calls.length > 0
        ? "tool_calls"
        : "stop"
      : reason;
    shown.set(i, finish);
    choices.push(
      shownChoice(i, split.content, shownToolCalls(tools.requestSha256Hex, i, split.calls), finish),
    );
  }
  return { ok: true, choices, finishReasons: shown };
}
