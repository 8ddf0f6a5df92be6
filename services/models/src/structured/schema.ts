/**
 * The JSON Schema subset Darkbloom enforces with grammar-constrained decoding, compiled once into a
 * small tree that the grammar builder (gbnf.ts) and the validator (validate.ts) both walk, so what
 * the provider's sampler allows and what the coordinator accepts are the same thing.
 *
 * A keyword is either enforced (by the grammar, and checked again on the output) or refused with an
 * error naming it: a schema is never half-applied. Annotations (title, description, default, …) are
 * the only keywords passed over. The subset is what OpenAI's structured outputs accept in practice
 * and what zod, Pydantic and the SDKs' helpers emit: objects, arrays, strings with length bounds,
 * numbers, integers, booleans, null, enum, const, anyOf, nullable type lists, and `$ref` into
 * `$defs`/`definitions` (recursion included).
 */

import { PATTERN_FORMATS } from "./formats.js";
import { type NumberBounds, numberRangeExpression } from "./number-range.js";
import { boundedPattern, type CompiledPattern, compilePattern, PatternError } from "./pattern.js";

/** A schema the grammar cannot enforce or the request got wrong; `path` is the keyword's place in it. */
export class SchemaError extends Error {
  override readonly name = "SchemaError";

  constructor(
    message: string,
    /** Dotted path from the schema's root, e.g. `properties.name.pattern` ("" for the root). */
    readonly path: string,
  ) {
    super(message);
  }
}

export type SchemaNode =
  | { kind: "any" }
  | {
      kind: "object";
      /** Declared properties in the order they are generated. */
      properties: { name: string; node: SchemaNode; required: boolean }[];
      /**
       * Whether keys beyond `properties` validate. They are never generated, except that an object
       * with no declared properties that allows others is any JSON object.
       */
      additional: boolean;
    }
  | { kind: "array"; items: SchemaNode; minItems: number; maxItems: number | undefined }
  | {
      kind: "string";
      minLength: number;
      maxLength: number | undefined;
      format?: StringFormat;
      /** `pattern`: the strings it matches (any `format` beside it is what the pattern spells out). */
      pattern?: CompiledPattern;
    }
  /**
   * A number; `nonNegative` when the schema's only bound is `minimum: 0` (any magnitude, exponents
   * too); other bounds in `bounds` (number-range.ts).
   */
  | { kind: "number"; nonNegative: boolean; bounds?: NumberBounds }
  /** An integer within [min, max] (the schema's bounds; ±Infinity where it gives none). */
  | { kind: "integer"; min: number; max: number }
  | { kind: "boolean" }
  | { kind: "null" }
  /** enum or const: one of these JSON values exactly. */
  | { kind: "literal"; values: unknown[] }
  | { kind: "union"; options: SchemaNode[] }
  | { kind: "ref"; name: string };

/**
 * The string formats the grammar writes exactly (formats.ts): what zod's `iso.date()`,
 * `iso.datetime()` and `uuid()` check as well as what JSON Schema means by them.
 */
export const STRING_FORMATS = ["date", "date-time", "uuid"] as const;
export type StringFormat = (typeof STRING_FORMATS)[number];

export interface CompiledSchema {
  root: SchemaNode;
  /** Definitions reached through `$ref`, by the name they were declared with; "#" is the root. */
  defs: Map<string, SchemaNode>;
}

/** Bounds that keep a grammar small enough to build per request and cheap for the sampler. */
export const SCHEMA_LIMITS = {
  depth: 16,
  nodes: 5_000,
  enumValues: 1_000,
  /** llama.cpp expands `{m,n}` into n rules: bounded lengths and counts stay cheap. */
  maxLength: 4_096,
  maxItems: 1_024,
} as const;

const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "$schema",
  "$id",
  "$comment",
  "deprecated",
  "readOnly",
  "writeOnly",
]);

const KEYWORDS = new Set([
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "minItems",
  "maxItems",
  "minLength",
  "maxLength",
  "format",
  "pattern",
  "enum",
  "const",
  "anyOf",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "$ref",
  "$defs",
  "definitions",
]);

/** Why a keyword commonly sent is refused, so that the 400 says what to do instead. */
const REFUSED: Record<string, string> = {
  oneOf: "'oneOf' is not supported; use 'anyOf'",
  allOf: "'allOf' is not supported; merge the schemas into one",
  not: "'not' is not supported",
  multipleOf: "'multipleOf' is not supported",
  patternProperties: "'patternProperties' is not supported",
  prefixItems: "'prefixItems' (tuples) is not supported",
  uniqueItems: "'uniqueItems' is not supported",
};

const NUMERIC_BOUNDS = ["minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"] as const;

const TYPES = new Set(["object", "array", "string", "number", "integer", "boolean", "null"]);

type Json = Record<string, unknown>;

/**
 * Compiles a JSON Schema. With `strict` (OpenAI's `strict: true`) the schema must also follow
 * OpenAI's strict rules, so that a schema written for OpenAI is refused or accepted the same here:
 * the root is an object, and every object lists every property in `required` and sets
 * `additionalProperties: false`.
 */
export function compileSchema(schema: unknown, options: { strict: boolean }): CompiledSchema {
  return new Compiler(schema, options.strict).compile();
}

class Compiler {
  private readonly defs = new Map<string, SchemaNode>();
  /** Raw definitions by name, from the root's `$defs` and `definitions`. */
  private readonly rawDefs = new Map<string, { schema: unknown; path: string }>();
  private nodes = 0;

  constructor(
    private readonly schema: unknown,
    private readonly strict: boolean,
  ) {}

  compile(): CompiledSchema {
    if (typeof this.schema !== "object" || this.schema === null || Array.isArray(this.schema)) {
      throw new SchemaError("the schema must be a JSON object", "");
    }
    const root = this.schema as Json;
    for (const key of ["$defs", "definitions"] as const) {
      const table = root[key];
      if (table === undefined) continue;
      if (typeof table !== "object" || table === null || Array.isArray(table)) {
        throw new SchemaError(`'${key}' must be an object`, key);
      }
      for (const [name, def] of Object.entries(table))
        this.rawDefs.set(name, { schema: def, path: `${key}.${name}` });
    }
    if (this.strict && root.type !== "object") {
      throw new SchemaError("with strict, the schema's root must be 'type: \"object\"'", "type");
    }
    const node = this.node(root, "", 0);
    this.defs.set("#", node);
    checkLeftRecursion(node, this.defs);
    return { root: node, defs: this.defs };
  }

  private node(schema: unknown, path: string, depth: number): SchemaNode {
    if (++this.nodes > SCHEMA_LIMITS.nodes) {
      throw new SchemaError(`the schema has more than ${SCHEMA_LIMITS.nodes} subschemas`, path);
    }
    if (depth > SCHEMA_LIMITS.depth) {
      throw new SchemaError(`the schema nests deeper than ${SCHEMA_LIMITS.depth} levels`, path);
    }
    if (schema === true) return { kind: "any" };
    if (typeof schema !== "object" || schema === null || Array.isArray(schema)) {
      throw new SchemaError("a subschema must be a JSON object (or true)", path);
    }
    const s = schema as Json;
    for (const key of Object.keys(s)) {
      if (KEYWORDS.has(key) || ANNOTATIONS.has(key)) continue;
      throw new SchemaError(REFUSED[key] ?? `'${key}' is not a supported schema keyword`, at(path, key));
    }
    if (path !== "") {
      for (const key of ["$defs", "definitions"]) {
        if (s[key] !== undefined)
          throw new SchemaError(`'${key}' is only supported at the root`, at(path, key));
      }
    }
    const structural = Object.keys(s).filter((k) => KEYWORDS.has(k) && k !== "$defs" && k !== "definitions");

    if (s.$ref !== undefined) {
      if (structural.length > 1) {
        throw new SchemaError("'$ref' cannot be combined with other keywords", at(path, "$ref"));
      }
      return this.ref(s.$ref, at(path, "$ref"), depth);
    }
    if (s.anyOf !== undefined) {
      if (structural.length > 1) {
        throw new SchemaError(
          "'anyOf' cannot be combined with other keywords; move them into its options",
          at(path, "anyOf"),
        );
      }
      if (!Array.isArray(s.anyOf) || s.anyOf.length === 0) {
        throw new SchemaError("'anyOf' must be a non-empty array", at(path, "anyOf"));
      }
      return union(s.anyOf.map((option, i) => this.node(option, at(path, `anyOf[${i}]`), depth + 1)));
    }

    const types = this.types(s.type, at(path, "type"));
    if (s.const !== undefined || s.enum !== undefined) return this.literal(s, types, path);
    if (types === undefined) {
      const bound = NUMERIC_BOUNDS.find((k) => s[k] !== undefined);
      if (bound !== undefined) {
        throw new SchemaError(`'${bound}' needs 'type' "integer" or "number" beside it`, at(path, bound));
      }
      if (s.properties !== undefined || s.required !== undefined || s.additionalProperties !== undefined) {
        return this.object(s, path, depth);
      }
      if (s.items !== undefined) return this.array(s, path, depth);
      if (
        s.minLength !== undefined ||
        s.maxLength !== undefined ||
        s.format !== undefined ||
        s.pattern !== undefined
      ) {
        return this.string(s, path);
      }
      return { kind: "any" };
    }
    return union(types.map((type) => this.typed(type, s, path, depth)));
  }

  private typed(type: string, s: Json, path: string, depth: number): SchemaNode {
    switch (type) {
      case "object":
        return this.object(s, path, depth);
      case "array":
        return this.array(s, path, depth);
      case "string":
        return this.string(s, path);
      case "number":
        return this.number(s, path);
      case "integer":
        return this.integer(s, path);
      case "boolean":
        return { kind: "boolean" };
      default:
        return { kind: "null" };
    }
  }

  private types(value: unknown, path: string): string[] | undefined {
    if (value === undefined) return undefined;
    const list = typeof value === "string" ? [value] : value;
    if (
      !Array.isArray(list) ||
      list.length === 0 ||
      !list.every((t) => typeof t === "string" && TYPES.has(t))
    ) {
      throw new SchemaError(
        `'type' must be one of ${[...TYPES].join(", ")}, or a non-empty list of them`,
        path,
      );
    }
    if (new Set(list).size !== list.length) throw new SchemaError("'type' lists a type twice", path);
    return list as string[];
  }

  private object(s: Json, path: string, depth: number): SchemaNode {
    const props = s.properties ?? {};
    if (typeof props !== "object" || props === null || Array.isArray(props)) {
      throw new SchemaError("'properties' must be an object", at(path, "properties"));
    }
    const names = Object.keys(props);
    const required = s.required ?? [];
    if (!Array.isArray(required) || !required.every((r) => typeof r === "string")) {
      throw new SchemaError("'required' must be an array of property names", at(path, "required"));
    }
    for (const name of required) {
      if (!names.includes(name)) {
        throw new SchemaError(
          `'required' names '${name}', which is not in 'properties'`,
          at(path, "required"),
        );
      }
    }
    const extra = s.additionalProperties;
    if (extra !== undefined && typeof extra !== "boolean") {
      throw new SchemaError(
        "'additionalProperties' must be true or false (a schema for extra properties is not supported)",
        at(path, "additionalProperties"),
      );
    }
    if (this.strict) {
      if (extra !== false) {
        throw new SchemaError(
          "with strict, 'additionalProperties' is required to be supplied and to be false",
          at(path, "additionalProperties"),
        );
      }
      const missing = names.filter((n) => !required.includes(n));
      if (missing.length > 0) {
        throw new SchemaError(
          `with strict, 'required' must include every key in 'properties' (missing '${missing[0]}')`,
          at(path, "required"),
        );
      }
    }
    return {
      kind: "object",
      properties: names.map((name) => ({
        name,
        node: this.node((props as Json)[name], at(path, `properties.${name}`), depth + 1),
        required: required.includes(name),
      })),
      additional: extra !== false,
    };
  }

  private array(s: Json, path: string, depth: number): SchemaNode {
    const minItems = this.bound(s, "minItems", path, SCHEMA_LIMITS.maxItems) ?? 0;
    const maxItems = this.bound(s, "maxItems", path, SCHEMA_LIMITS.maxItems);
    if (maxItems !== undefined && maxItems < minItems) {
      throw new SchemaError("'maxItems' is below 'minItems'", at(path, "maxItems"));
    }
    const items =
      s.items === undefined ? ({ kind: "any" } as const) : this.node(s.items, at(path, "items"), depth + 1);
    return { kind: "array", items, minItems, maxItems };
  }

  private string(s: Json, path: string): SchemaNode {
    const minLength = this.bound(s, "minLength", path, SCHEMA_LIMITS.maxLength) ?? 0;
    const maxLength = this.bound(s, "maxLength", path, SCHEMA_LIMITS.maxLength);
    if (maxLength !== undefined && maxLength < minLength) {
      throw new SchemaError("'maxLength' is below 'minLength'", at(path, "maxLength"));
    }
    if (s.pattern !== undefined) return this.pattern(s.pattern, at(path, "pattern"), minLength, maxLength);
    if (s.format === undefined) return { kind: "string", minLength, maxLength };
    const byPattern = typeof s.format === "string" ? PATTERN_FORMATS[s.format] : undefined;
    if (byPattern !== undefined) return this.pattern(byPattern, at(path, "format"), minLength, maxLength);
    if (typeof s.format !== "string" || !(STRING_FORMATS as readonly string[]).includes(s.format)) {
      if (byPattern === undefined) {
        throw new SchemaError(
          `'format' ${JSON.stringify(s.format)} is not supported (${[...STRING_FORMATS, ...Object.keys(PATTERN_FORMATS)].join(", ")} are); describe it in 'description' instead`,
          at(path, "format"),
        );
      }
    }
    // A format fixes the string's shape; length bounds beside it could contradict what it writes.
    if (s.minLength !== undefined || s.maxLength !== undefined) {
      throw new SchemaError(
        "'format' cannot be combined with 'minLength' or 'maxLength'",
        at(path, "format"),
      );
    }
    return { kind: "string", minLength: 0, maxLength: undefined, format: s.format as StringFormat };
  }

  /**
   * A `pattern` (or a format written by its expression): the grammar writes what it matches, and the
   * output is checked with it. A `format` beside it (zod writes both: `email` with the expression it
   * checks emails with) is taken as the pattern's name, as JSON Schema's format annotations are.
   * Length bounds beside it restrict the pattern's repetitions to strings within them
   * (pattern.ts boundedPattern), or are a 400 where no restriction can.
   */
  private pattern(
    source: unknown,
    where: string,
    minLength: number,
    maxLength: number | undefined,
  ): SchemaNode {
    if (typeof source !== "string") throw new SchemaError("'pattern' must be a string", where);
    try {
      const pattern = compilePattern(source);
      if (minLength === 0 && maxLength === undefined)
        return { kind: "string", minLength, maxLength, pattern };
      return { kind: "string", minLength, maxLength, pattern: boundedPattern(pattern, minLength, maxLength) };
    } catch (e) {
      if (e instanceof PatternError) throw new SchemaError(e.message, where);
      throw e;
    }
  }

  /**
   * Integer bounds, enforced by the grammar digit by digit (gbnf.ts integerRange); the exclusive
   * forms become the nearest integer inside. zod's `int()` writes the safe-integer range.
   */
  private integer(s: Json, path: string): SchemaNode {
    const read = (key: string): number | undefined => {
      const v = s[key];
      if (v === undefined) return undefined;
      if (typeof v !== "number" || !Number.isFinite(v))
        throw new SchemaError(`'${key}' must be a number`, at(path, key));
      return v;
    };
    let min = Number.NEGATIVE_INFINITY;
    let max = Number.POSITIVE_INFINITY;
    const minimum = read("minimum");
    const exclusiveMinimum = read("exclusiveMinimum");
    const maximum = read("maximum");
    const exclusiveMaximum = read("exclusiveMaximum");
    if (minimum !== undefined) min = Math.max(min, Math.ceil(minimum));
    if (exclusiveMinimum !== undefined) min = Math.max(min, Math.floor(exclusiveMinimum) + 1);
    if (maximum !== undefined) max = Math.min(max, Math.floor(maximum));
    if (exclusiveMaximum !== undefined) max = Math.min(max, Math.ceil(exclusiveMaximum) - 1);
    if (min > max)
      throw new SchemaError(
        "no integer lies within the bounds",
        path === "" ? "minimum" : at(path, "minimum"),
      );
    if (
      Math.max(Math.abs(min === -Infinity ? 0 : min), Math.abs(max === Infinity ? 0 : max)) >
      Number.MAX_SAFE_INTEGER
    ) {
      throw new SchemaError(
        "integer bounds beyond ±(2^53 - 1) are not supported",
        at(path, minimum !== undefined ? "minimum" : "maximum"),
      );
    }
    return { kind: "integer", min, max };
  }

  /**
   * A number's bounds: `minimum: 0` alone is any non-negative number; other bounds are written digit
   * by digit (number-range.ts), the exclusive forms included.
   */
  private number(s: Json, path: string): SchemaNode {
    const read = (key: string): number | undefined => {
      const v = s[key];
      if (v === undefined) return undefined;
      if (typeof v !== "number" || !Number.isFinite(v))
        throw new SchemaError(`'${key}' must be a number`, at(path, key));
      return v;
    };
    const [minimum, exclusiveMinimum, maximum, exclusiveMaximum] = NUMERIC_BOUNDS.map(read);
    if (exclusiveMinimum === undefined && maximum === undefined && exclusiveMaximum === undefined) {
      if (minimum === undefined || minimum === 0) return { kind: "number", nonNegative: minimum === 0 };
    }
    // The tighter of each pair.
    const lower =
      exclusiveMinimum !== undefined && (minimum === undefined || exclusiveMinimum >= minimum)
        ? { min: exclusiveMinimum, minExclusive: true }
        : { min: minimum, minExclusive: false };
    const upper =
      exclusiveMaximum !== undefined && (maximum === undefined || exclusiveMaximum <= maximum)
        ? { max: exclusiveMaximum, maxExclusive: true }
        : { max: maximum, maxExclusive: false };
    const bounds: NumberBounds = { ...lower, ...upper };
    if (
      numberRangeExpression(
        bounds,
        () => ["0"],
        (t) => t,
      ) === undefined
    ) {
      throw new SchemaError(
        "no number the grammar writes (at most 9 integer and 6 fraction digits) lies within the bounds",
        at(path, lower.min !== undefined ? (lower.minExclusive ? "exclusiveMinimum" : "minimum") : "maximum"),
      );
    }
    return { kind: "number", nonNegative: false, bounds };
  }

  private bound(s: Json, key: string, path: string, limit: number): number | undefined {
    const v = s[key];
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
      throw new SchemaError(`'${key}' must be a non-negative integer`, at(path, key));
    }
    if (v > limit) throw new SchemaError(`'${key}' above ${limit} is not supported`, at(path, key));
    return v;
  }

  private literal(s: Json, types: string[] | undefined, path: string): SchemaNode {
    let values: unknown[];
    let key: string;
    if (s.const !== undefined) {
      if (s.enum !== undefined) throw new SchemaError("use 'enum' or 'const', not both", at(path, "const"));
      values = [s.const];
      key = "const";
    } else {
      if (!Array.isArray(s.enum) || s.enum.length === 0) {
        throw new SchemaError("'enum' must be a non-empty array", at(path, "enum"));
      }
      if (s.enum.length > SCHEMA_LIMITS.enumValues) {
        throw new SchemaError(`'enum' has more than ${SCHEMA_LIMITS.enumValues} values`, at(path, "enum"));
      }
      values = s.enum;
      key = "enum";
    }
    if (types !== undefined) {
      for (const v of values) {
        if (!types.some((t) => isOfType(v, t))) {
          throw new SchemaError(
            `'${key}' holds ${JSON.stringify(v)}, which is not of 'type' ${types.join(" or ")}`,
            at(path, key),
          );
        }
      }
    }
    return { kind: "literal", values };
  }

  private ref(value: unknown, path: string, depth: number): SchemaNode {
    if (typeof value !== "string") throw new SchemaError("'$ref' must be a string", path);
    if (value === "#") return { kind: "ref", name: "#" };
    const match = /^#\/(\$defs|definitions)\/([^/]+)$/.exec(value);
    if (!match) {
      throw new SchemaError(
        `'$ref' ${JSON.stringify(value)} is not supported; refer to '#', '#/$defs/…' or '#/definitions/…'`,
        path,
      );
    }
    const name = `${match[1]}/${(match[2] as string).replace(/~1/g, "/").replace(/~0/g, "~")}`;
    const raw = this.rawDefs.get(name.slice(name.indexOf("/") + 1));
    if (raw === undefined) throw new SchemaError(`'$ref' ${JSON.stringify(value)} names no definition`, path);
    if (!this.defs.has(name)) {
      // Placed before compiling so that a definition referring to itself finds its name.
      this.defs.set(name, { kind: "any" });
      this.defs.set(name, this.node(raw.schema, raw.path, depth + 1));
    }
    return { kind: "ref", name };
  }
}

function union(options: SchemaNode[]): SchemaNode {
  return options.length === 1 ? (options[0] as SchemaNode) : { kind: "union", options };
}

function at(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

export function isOfType(value: unknown, type: string): boolean {
  switch (type) {
    case "object":
      return typeof value === "object" && value !== null && !Array.isArray(value);
    case "array":
      return Array.isArray(value);
    case "string":
      return typeof value === "string";
    case "number":
      return typeof value === "number" && Number.isFinite(value);
    case "integer":
      return typeof value === "number" && Number.isInteger(value);
    case "boolean":
      return typeof value === "boolean";
    default:
      return value === null;
  }
}

/**
 * A definition that can reach itself through `$ref` and `anyOf` alone (without an object or array
 * opening first) would be a left-recursive grammar rule, which never produces anything: refused.
 */
function checkLeftRecursion(root: SchemaNode, defs: Map<string, SchemaNode>): void {
  const leading = (node: SchemaNode, out: Set<string>): void => {
    if (node.kind === "ref") out.add(node.name);
    else if (node.kind === "union") for (const o of node.options) leading(o, out);
  };
  const visit = (name: string, trail: string[]): void => {
    if (trail.includes(name)) {
      throw new SchemaError(`'$ref' cycle ${[...trail, name].join(" → ")} generates nothing`, "$ref");
    }
    const node = defs.get(name);
    if (node === undefined) return;
    const next = new Set<string>();
    leading(node, next);
    for (const n of next) visit(n, [...trail, name]);
  };
  const first = new Set<string>();
  leading(root, first);
  for (const name of first) visit(name, []);
  for (const name of defs.keys()) visit(name, []);
}
