/**
 * A model's tool-call syntax (@darkbloom/models/tools ToolCallSyntax) from its chat wrapper's
 * function-calling settings: node-llama-cpp writes, per template, the text around a call's name and
 * arguments, and how a turn's calls are joined.
 */
import {
  type ChatWrapper,
  type LlamaModel,
  LlamaText,
  SpecialToken,
  SpecialTokensText,
  type Token,
} from "node-llama-cpp";
import type { ToolCallSyntax } from "../tools/syntax.js";

type Settings = ChatWrapper["settings"]["functions"];
type Part = Settings["call"]["prefix"];

/**
 * The syntax, or undefined where the template's call cannot be written as text the model's output
 * shows: a part holding a control token (the detokenized text never shows one, so the calls could
 * not be found in it) or a builtin token other than the end of generation that closes a call
 * (Llama 3.1's `<|eom_id|>`, which is left out: generation ends there anyway).
 */
export function toolSyntaxOf(wrapper: ChatWrapper, model: LlamaModel): ToolCallSyntax | undefined {
  const functions: Settings | undefined = wrapper.settings?.functions;
  if (!functions?.call) return undefined;
  const tokens = (text: string): Token[] => model.tokenize(text, true);
  const isEog = (token: Token | undefined): boolean => token !== undefined && model.isEogToken(token);
  const text = (part: Part | undefined, trailingEog = false): string | undefined => {
    const values = [...LlamaText(part ?? "").values];
    if (trailingEog) {
      // The end of generation that closes a call, as a builtin token or as the end of special text.
      for (;;) {
        const last = values.at(-1);
        if (last instanceof SpecialToken && (last.value === "EOS" || last.value === "EOT")) {
          values.pop();
          continue;
        }
        if (!(last instanceof SpecialTokensText)) break;
        const lastToken = tokens(last.value).at(-1);
        const piece = isEog(lastToken) ? model.detokenize([lastToken as Token], true) : "";
        if (piece === "" || !last.value.endsWith(piece)) break;
        values.pop();
        const rest = last.value.slice(0, -piece.length);
        if (rest !== "") values.push(new SpecialTokensText(rest));
      }
    }
    let out = "";
    for (const v of values) {
      if (typeof v === "string") out += v;
      else if (v instanceof SpecialTokensText) {
        if (tokens(v.value).some((t) => model.getTokenAttributes(t).control)) return undefined;
        out += v.value;
      } else return undefined;
    }
    return out;
  };
  const parallel = functions.parallelism?.call;
  const syntax = {
    sectionPrefix: parallel ? text(parallel.sectionPrefix) : "",
    prefix: text(functions.call.prefix),
    paramsPrefix: text(functions.call.paramsPrefix),
    suffix: text(functions.call.suffix, true),
    between: parallel ? text(parallel.betweenCalls) : undefined,
  };
  const { sectionPrefix, prefix, paramsPrefix, suffix, between } = syntax;
  if (sectionPrefix === undefined || !prefix || paramsPrefix === undefined || suffix === undefined)
    return undefined;
  if (parallel && between === undefined) return undefined;
  return { sectionPrefix, prefix, paramsPrefix, suffix, between };
}
