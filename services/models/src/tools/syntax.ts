/**
 * How a model writes a function call: the text its chat template puts around the function's name
 * and its JSON arguments (node-llama-cpp's chat wrappers know it per template: Qwen's
 * `<tool_call>\n{"name": "…", "arguments": …}\n</tool_call>`, Llama 3.1's `<function=…>…</function>`,
 * the generic `||call: name(…)`). Plain data, derived from the model's chat wrapper where the model
 * is loaded (chat/tool-syntax.ts): the provider builds its grammar from it and splits its output
 * with it, and the coordinator splits what it receives with the same syntax, derived from the same
 * GGUF's vocabulary.
 */
export interface ToolCallSyntax {
  /** Before a turn's first call (a template's parallel-call section opener; often empty). */
  sectionPrefix: string;
  /** Before each call's function name. */
  prefix: string;
  /** Between the name and the arguments; `{{functionName}}` stands for the name. */
  paramsPrefix: string;
  /** After the arguments (an end-of-generation token the template closes a call with is left out). */
  suffix: string;
  /** Between two calls of one turn; undefined where the template makes one call a turn. */
  between: string | undefined;
}

/** The text between a function's name and its arguments. */
export function paramsPrefixOf(syntax: ToolCallSyntax, name: string): string {
  return syntax.paramsPrefix.replaceAll("{{functionName}}", name);
}

/** What opens a turn's calls: the text whose first appearance ends the content and starts the calls. */
export function callsTrigger(syntax: ToolCallSyntax): string {
  return syntax.sectionPrefix + syntax.prefix;
}
