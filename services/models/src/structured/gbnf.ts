/**
 * GBNF grammars (llama.cpp's grammar format, what its grammar sampler enforces token by token) for a
 * compiled schema, and for `json_object` (any JSON object).
 *
 * Every repetition the output could run away with is bounded where JSON allows: whitespace is at most
 * one newline and eight indent characters between tokens, numbers at most 16 digits, and strings and
 * arrays as long as the schema's bounds. An unbounded string is still unbounded (a schema without
 * `maxLength` allows any length): max_tokens is then what ends it.
 */

import { FORMAT_RULES, formatRule } from "./formats.js";
import { numberRangeExpression } from "./number-range.js";
import { patternExpression } from "./pattern.js";
import type { CompiledSchema, SchemaNode, StringFormat } from "./schema.js";

/** Rules every grammar may use, emitted only when referred to. */
const BASE_RULES: Record<string, string> = {
  ws: '| " " | "\\n" [ \\t]{0,8}',
  char: '[^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})',
  string: '"\\"" char* "\\""',
  integer: '"-"? natural',
  natural: '"0" | [1-9] [0-9]{0,15}',
  fraction: '("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,2})?',
  number: "integer fraction",
  "non-negative-number": "natural fraction",
  boolean: '"true" | "false"',
  null: '"null"',
  value: "object | array | string | number | boolean | null",
  object: '"{" ws (member ("," ws member)*)? "}" ws',
  member: 'string ws ":" ws value',
  array: '"[" ws (value ("," ws value)*)? "]" ws',
};
const BASE_DEPENDENCIES: Record<string, string[]> = {
  string: ["char"],
  integer: ["natural"],
  number: ["integer", "fraction"],
  "non-negative-number": ["natural", "fraction"],
  value: ["object", "array", "string", "number", "boolean", "null"],
  object: ["ws", "member"],
  member: ["string", "ws", "value"],
  array: ["ws", "value"],
};

/** The grammar of `response_format: {type: "json_object"}`: one JSON object, nothing after it. */
export function jsonObjectGrammar(): string {
  const builder = new GrammarBuilder();
  return builder.finish(builder.base("object"));
}

/** The grammar of a compiled schema: one value the schema accepts, nothing after it. */
export function schemaGrammar(schema: CompiledSchema): string {
  const builder = new GrammarBuilder();
  return builder.finish(builder.schema(schema));
}

/** A GBNF string literal for `text` (llama.cpp's escapes; other characters as UTF-8). */
export function gbnfLiteral(text: string): string {
  let out = '"';
  for (const ch of text) {
    const code = ch.codePointAt(0) as number;
    if (ch === '"' || ch === "\\") out += `\\${ch}`;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return `${out}"`;
}

/**
 * Builds one grammar from any number of compiled schemas (a tool call's grammar has one per
 * function) and rules of the caller's own: each rule defined once, named uniquely.
 */
export class GrammarBuilder {
  private readonly rules = new Map<string, string>();
  private readonly named = new Map<SchemaNode, string>();
  /** The definitions of the schema being built, and their rule names (a name is per schema). */
  private defs = new Map<string, SchemaNode>();
  private defNames = new Map<string, string>();
  private next = 0;

  /** The rule generating one value `schema` accepts. */
  schema(schema: CompiledSchema): string {
    this.defs = schema.defs;
    this.defNames = new Map();
    return this.rule(schema.root);
  }

  /** The root rule (and only the base rules used), in a stable order. */
  finish(rootRule: string): string {
    const lines = [`root ::= ${rootRule}`];
    for (const [name, body] of this.rules) lines.push(`${name} ::= ${body}`);
    return `${lines.join("\n")}\n`;
  }

  /** A base rule, defined with the base rules it uses. */
  base(name: string): string {
    if (!this.rules.has(name)) {
      this.rules.set(name, BASE_RULES[name] as string);
      for (const dep of BASE_DEPENDENCIES[name] ?? []) this.base(dep);
    }
    return name;
  }

  /** A rule name to define later with set(): for rules that refer to each other. */
  reserve(): string {
    const name = `n${this.next++}`;
    this.rules.set(name, "");
    return name;
  }

  /** Defines a reserved rule. */
  set(name: string, body: string): void {
    this.rules.set(name, body);
  }

  /** A new rule with this body; returns its name. */
  define(body: string): string {
    const name = `n${this.next++}`;
    this.rules.set(name, body);
    return name;
  }

  /** The name of the rule (or a base rule) generating `node`, each node defined once. */
  private rule(node: SchemaNode): string {
    const known = this.named.get(node);
    if (known !== undefined) return known;
    let name: string;
    switch (node.kind) {
      case "any":
        name = this.base("value");
        break;
      case "boolean":
      case "null":
        name = this.base(node.kind);
        break;
      case "number":
        name = node.bounds
          ? this.define(numberRangeExpression(node.bounds, naturalRange, gbnfLiteral) as string)
          : this.base(node.nonNegative ? "non-negative-number" : "number");
        break;
      case "integer":
        name =
          node.min === Number.NEGATIVE_INFINITY && node.max === Number.POSITIVE_INFINITY
            ? this.base("integer")
            : this.define(integerRange(node.min, node.max));
        break;
      case "string":
        name = node.pattern
          ? this.define(patternExpression(node.pattern))
          : node.format
            ? this.format(node.format)
            : this.string(node.minLength, node.maxLength);
        break;
      case "literal":
        name = this.define(node.values.map((v) => gbnfLiteral(JSON.stringify(v))).join(" | "));
        break;
      case "union":
        name = this.define(node.options.map((o) => this.rule(o)).join(" | "));
        break;
      case "array":
        name = this.array(node);
        break;
      case "object":
        name = this.object(node);
        break;
      case "ref":
        name = this.ref(node.name);
        break;
    }
    this.named.set(node, name);
    return name;
  }

  private ref(defName: string): string {
    const known = this.defNames.get(defName);
    if (known !== undefined) return known;
    // Named before its body is built, so that a recursive definition refers to itself.
    const name = `d${this.next++}-${defName
      .slice(defName.lastIndexOf("/") + 1)
      .replace(/[^A-Za-z0-9-]/g, "-")
      .slice(0, 40)}`;
    this.defNames.set(defName, name);
    this.rules.set(name, "");
    this.rules.set(name, this.rule(this.defs.get(defName) as SchemaNode));
    return name;
  }

  private format(format: StringFormat): string {
    for (const [name, body] of Object.entries(FORMAT_RULES[format])) this.rules.set(name, body);
    return formatRule(format);
  }

  private string(min: number, max: number | undefined): string {
    if (min === 0 && max === undefined) return this.base("string");
    this.base("char");
    return this.define(`"\\"" char${repeat(min, max)} "\\""`);
  }

  private array(node: Extract<SchemaNode, { kind: "array" }>): string {
    const item = this.rule(node.items);
    this.base("ws");
    const max = node.maxItems;
    if (max === 0) return this.define('"[" ws "]" ws');
    const rest = `("," ws ${item})${repeat(Math.max(0, node.minItems - 1), max === undefined ? undefined : max - 1)}`;
    const items = `${item} ${rest}`;
    return this.define(`"[" ws ${node.minItems === 0 ? `(${items})?` : items} "]" ws`);
  }

  /**
   * Declared properties in order: required ones always, each optional one present or not. With `k`
   * optional properties the rules stay linear in `k`: `tail_i` is any ordered subset of the optional
   * properties from `i` on, each after a comma; with no required property, the first present optional
   * one opens the object without a comma.
   */
  private object(node: Extract<SchemaNode, { kind: "object" }>): string {
    if (node.properties.length === 0 && node.additional) return this.base("object");
    this.base("ws");
    if (node.properties.length === 0) return this.define('"{" ws "}" ws');
    const member = (p: (typeof node.properties)[number]) =>
      `${gbnfLiteral(JSON.stringify(p.name))} ws ":" ws ${this.rule(p.node)}`;
    const required = node.properties.filter((p) => p.required).map(member);
    const optional = node.properties.filter((p) => !p.required).map(member);
    const tails: string[] = [];
    for (let i = optional.length - 1; i >= 0; i--) {
      const after = tails[0] === undefined ? "" : ` ${tails[0]}`;
      tails.unshift(this.define(`("," ws ${optional[i]})?${after}`));
    }
    let body: string;
    if (required.length > 0) {
      body = [required.join(' "," ws '), tails[0]].filter((x) => x !== undefined).join(" ");
    } else {
      const starts = optional.map((m, i) => (tails[i + 1] === undefined ? m : `${m} ${tails[i + 1]}`));
      body = `(${starts.join(" | ")})?`;
    }
    return this.define(`"{" ws ${body} "}" ws`);
  }
}

/** The largest magnitude the grammar writes (16 digits), where a schema gives no bound. */
const LARGEST = 10n ** 16n - 1n;

/**
 * The integers in [min, max] as GBNF alternatives, digit by digit: each alternative is a run of
 * fixed digits, one digit range, then any digits (the split to-regex-range makes), so that no other
 * integer, and no leading zero, matches.
 */
export function integerRange(min: number, max: number): string {
  const lo = min === Number.NEGATIVE_INFINITY ? -LARGEST : BigInt(min);
  const hi = max === Number.POSITIVE_INFINITY ? LARGEST : BigInt(max);
  const alternatives: string[] = [];
  // Negative values: "-" and the magnitudes |hi'|..|lo|, where hi' is the largest negative allowed.
  if (lo < 0n) {
    const top = hi < 0n ? -hi : 1n;
    alternatives.push(...naturalRange(top, -lo).map((p) => `"-" ${p}`));
  }
  if (hi >= 0n) alternatives.push(...naturalRange(lo > 0n ? lo : 0n, hi));
  return alternatives.join(" | ");
}

/** Patterns for the naturals in [a, b], each of one digit count (no leading zeros). */
export function naturalRange(a: bigint, b: bigint): string[] {
  const patterns: string[] = [];
  let start = a;
  for (const stop of rangeStops(a, b)) {
    patterns.push(digitsPattern(start.toString(), stop.toString()));
    start = stop + 1n;
  }
  return patterns;
}

/** Where [a, b] splits so that each piece is `prefix [x-y] [0-9]*` over numbers of one length. */
function rangeStops(a: bigint, b: bigint): bigint[] {
  const stops = new Set<bigint>([b]);
  const text = a.toString();
  for (let nines = 1; ; nines++) {
    const stop = BigInt((text.length > nines ? text.slice(0, -nines) : "") + "9".repeat(nines));
    if (stop < a || stop > b) break;
    stops.add(stop);
  }
  for (let zeros = 1; ; zeros++) {
    const unit = 10n ** BigInt(zeros);
    const stop = b + 1n - ((b + 1n) % unit) - 1n;
    if (stop <= a || stop > b) break;
    stops.add(stop);
  }
  return [...stops].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
}

/** `start` and `stop` have one length: fixed digits where they agree, then ranges. */
function digitsPattern(start: string, stop: string): string {
  const parts: string[] = [];
  for (let i = 0; i < start.length; i++) {
    const a = start[i] as string;
    const b = stop[i] as string;
    parts.push(a === b ? `"${a}"` : `[${a}-${b}]`);
  }
  return parts.length === 1 ? (parts[0] as string) : `(${parts.join(" ")})`;
}

function repeat(min: number, max: number | undefined): string {
  if (max === undefined) return min === 0 ? "*" : min === 1 ? "+" : `{${min},}`;
  if (min === max) return `{${min}}`;
  return `{${min},${max}}`;
}
