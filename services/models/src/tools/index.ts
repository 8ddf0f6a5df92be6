// Function calling (`tools`): the request's tool use, the grammar in the model's call syntax, and
// the split of the model's text into content and calls, shared by provider and coordinator.
export { shownToolCalls, toolCallId } from "./call-id.js";
export { MAX_CALLS_PER_TURN, toolCallGrammar } from "./grammar.js";
export {
  type SplitCall,
  type SplitDelta,
  type SplitOutput,
  type SplitState,
  splitToolOutput,
  ToolCallSplitter,
} from "./parse.js";
export { callsTrigger, paramsPrefixOf, type ToolCallSyntax } from "./syntax.js";
export {
  readToolUse,
  type ToolChoice,
  type ToolFunction,
  type ToolUse,
  toolsWithFormat,
} from "./tool-use.js";
export { toolCallViolation } from "./violation.js";
