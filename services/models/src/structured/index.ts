// Structured outputs: `response_format` read once for coordinator and provider, the JSON Schema subset
// compiled into one tree, the GBNF grammar the provider decodes under, and the check of its output.

export { FORMAT_PATTERNS } from "./formats.js";
export { gbnfLiteral, integerRange, jsonObjectGrammar, schemaGrammar } from "./gbnf.js";
export {
  formatGrammar,
  formatViolation,
  readResponseFormat,
  type StructuredFormat,
} from "./response-format.js";
export {
  type CompiledSchema,
  compileSchema,
  SCHEMA_LIMITS,
  SchemaError,
  type SchemaNode,
  STRING_FORMATS,
  type StringFormat,
} from "./schema.js";
export { jsonEqual, schemaViolation } from "./validate.js";
