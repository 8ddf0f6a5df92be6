/**
 * The GBNF grammar a tool-using request decodes under, in the model's own call syntax: each call is
 * the syntax's prefix, one of the offered names, its params prefix, arguments the function's
 * parameter schema accepts, and the suffix; nothing can follow the calls but the end of the turn.
 *
 * `required` and a named function start the output with the calls. `auto` lets the model write any
 * text first, and that text can never contain the text that opens the calls (the trigger): the
 * grammar is the automaton of "text without the trigger" (Knuth-Morris-Pratt states over the
 * trigger's characters), whose step that would complete the trigger continues into the calls
 * instead. So the first appearance of the trigger always begins well-formed calls, and the output
 * splits into content and calls in exactly one way (parse.ts).
 */
import { GrammarBuilder, gbnfLiteral } from "../structured/gbnf.js";
import { callsTrigger, paramsPrefixOf, type ToolCallSyntax } from "./syntax.js";
import type { ToolUse } from "./tool-use.js";

/** The most calls one turn makes (parallel_tool_calls, where the template has parallel calls). */
export const MAX_CALLS_PER_TURN = 16;

/** The grammar for `use` in `syntax`. */
export function toolCallGrammar(syntax: ToolCallSyntax, use: ToolUse): string {
  const builder = new GrammarBuilder();
  const offered =
    use.choice.type === "function"
      ? use.functions.filter((f) => f.name === (use.choice as { name: string }).name)
      : use.functions;
  const oneCall = builder.define(
    offered
      .map(
        (f) =>
          `${gbnfLiteral(f.name + paramsPrefixOf(syntax, f.name))} ${builder.schema(f.parameters)} ${gbnfLiteral(syntax.suffix)}`,
      )
      .join(" | "),
  );
  // After the trigger: the first call's name on, then any further calls of the turn.
  const more =
    use.parallel && syntax.between !== undefined
      ? ` (${gbnfLiteral(syntax.between + syntax.prefix)} ${oneCall}){0,${MAX_CALLS_PER_TURN - 1}}`
      : "";
  const afterTrigger = builder.define(`${oneCall}${more}`);
  const trigger = callsTrigger(syntax);
  if (use.choice.type !== "auto") return builder.finish(`${gbnfLiteral(trigger)} ${afterTrigger}`);
  return builder.finish(textThenCalls(builder, trigger, afterTrigger));
}

/**
 * Text that does not contain `trigger`, optionally followed by the trigger and `after`: state i has
 * matched the trigger's first i characters. Returns the start rule.
 */
function textThenCalls(builder: GrammarBuilder, trigger: string, after: string): string {
  const t = [...trigger];
  const k = t.length;
  // KMP failure function: fail[i] is the longest proper border of t[0..i).
  const fail = new Array<number>(k + 1).fill(0);
  for (let i = 2; i <= k; i++) {
    let j = fail[i - 1] as number;
    while (j > 0 && t[j] !== t[i - 1]) j = fail[j] as number;
    if (t[j] === t[i - 1]) j++;
    fail[i] = j;
  }
  const step = (state: number, ch: string): number => {
    let j = state;
    while (j > 0 && t[j] !== ch) j = fail[j] as number;
    return t[j] === ch ? j + 1 : 0;
  };
  const alphabet = [...new Set(t)];
  const names = t.map(() => builder.reserve());
  t.forEach((expected, i) => {
    const alternatives = ['""'];
    alternatives.push(`${gbnfLiteral(expected)} ${i + 1 === k ? after : names[i + 1]}`);
    const excluded = [expected];
    for (const ch of alphabet) {
      if (ch === expected) continue;
      const target = step(i, ch);
      if (target === 0) continue;
      excluded.push(ch);
      alternatives.push(`${gbnfLiteral(ch)} ${names[target]}`);
    }
    alternatives.push(`${negatedClass(excluded)} ${names[0]}`);
    builder.set(names[i] as string, alternatives.join(" | "));
  });
  return names[0] as string;
}

/** A GBNF character class matching any character but these. */
function negatedClass(chars: readonly string[]): string {
  const escaped = chars.map((ch) => {
    const code = ch.codePointAt(0) as number;
    return code <= 0xffff
      ? `\\u${code.toString(16).padStart(4, "0")}`
      : `\\U${code.toString(16).padStart(8, "0")}`;
  });
  return `[^${escaped.join("")}]`;
}
