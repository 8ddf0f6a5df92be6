// The JSONPath subset of printer columns (client-go jsonpath, as kubectl and the server's table
// convertor read `{<jsonPath>}`): `.a.b`, `['a.b']`, `[0]`, `[-1]`, `[*]`, and filters
// `[?(@.type=="Ready")]` comparing a path with a literal (==, !=, <, <=, >, >=) or testing that it exists.

import { deepEqual } from "./json.js";
import { isObject } from "./schema.js";
import type { Json } from "./types.js";

type Comparison = "==" | "!=" | "<" | "<=" | ">" | ">=";

export type Segment =
  | { readonly kind: "field"; readonly name: string }
  | { readonly kind: "index"; readonly index: number }
  | { readonly kind: "wildcard" }
  | {
      readonly kind: "filter";
      readonly path: readonly Segment[];
      readonly test: { readonly op: Comparison; readonly value: Json } | undefined;
    };

/** Parses a path such as `.status.conditions[?(@.type=="Ready")].status`; throws on syntax errors. */
export function parseJsonPath(text: string): Segment[] {
  const parser = new Parser(text.startsWith("{") && text.endsWith("}") ? text.slice(1, -1) : text);
  const segments = parser.segments(false);
  if (!parser.done())
    throw new Error(`unexpected ${JSON.stringify(parser.rest())} in ${JSON.stringify(text)}`);
  return segments;
}

/** Every value the path selects in `root`, in document order. */
export function evaluateJsonPath(segments: readonly Segment[], root: Json): Json[] {
  let current: Json[] = [root];
  for (const segment of segments) current = current.flatMap((value) => step(segment, value));
  return current;
}

function step(segment: Segment, value: Json): Json[] {
  switch (segment.kind) {
    case "field":
      return isObject(value) && Object.hasOwn(value, segment.name) ? [value[segment.name] as Json] : [];
    case "index": {
      if (!Array.isArray(value)) return [];
      const item = value.at(segment.index);
      return item === undefined ? [] : [item];
    }
    case "wildcard":
      return Array.isArray(value) ? value : isObject(value) ? Object.values(value) : [];
    case "filter": {
      const items = Array.isArray(value) ? value : [];
      return items.filter((item) => {
        const found = evaluateJsonPath(segment.path, item);
        if (segment.test === undefined) return found.length > 0;
        const { op, value: literal } = segment.test;
        return found.some((candidate) => compare(candidate, op, literal));
      });
    }
  }
}

function compare(a: Json, op: Comparison, b: Json): boolean {
  if (op === "==") return deepEqual(a, b);
  if (op === "!=") return !deepEqual(a, b);
  if (typeof a !== typeof b || (typeof a !== "number" && typeof a !== "string")) return false;
  const [x, y] = [a as number | string, b as number | string];
  return op === "<" ? x < y : op === "<=" ? x <= y : op === ">" ? x > y : x >= y;
}

class Parser {
  private at = 0;

  constructor(private readonly text: string) {}

  done(): boolean {
    return this.at >= this.text.length;
  }

  rest(): string {
    return this.text.slice(this.at);
  }

  /** Segments until the end, or (inside a filter) until an operator or `)`. */
  segments(inFilter: boolean): Segment[] {
    const segments: Segment[] = [];
    while (!this.done()) {
      const c = this.text[this.at];
      if (c === ".") {
        this.at++;
        if (this.text[this.at] === "*") {
          this.at++;
          segments.push({ kind: "wildcard" });
        } else {
          segments.push({ kind: "field", name: this.identifier() });
        }
      } else if (c === "[") {
        segments.push(this.bracket());
      } else if (inFilter) {
        break;
      } else {
        throw new Error(`unexpected ${JSON.stringify(this.rest())}`);
      }
    }
    return segments;
  }

  private identifier(): string {
    const match = /^[^.[\]()=!<>\s]+/.exec(this.rest());
    if (match === null) throw new Error(`expected a field name at ${JSON.stringify(this.rest())}`);
    this.at += match[0].length;
    return match[0];
  }

  private bracket(): Segment {
    const rest = this.rest();
    const quoted = /^\[\s*(['"])((?:\\.|(?!\1).)*)\1\s*\]/.exec(rest);
    if (quoted !== null) {
      this.at += quoted[0].length;
      return { kind: "field", name: (quoted[2] ?? "").replace(/\\(.)/g, "$1") };
    }
    const number = /^\[\s*(-?\d+)\s*\]/.exec(rest);
    if (number !== null) {
      this.at += number[0].length;
      return { kind: "index", index: Number(number[1]) };
    }
    const wildcard = /^\[\s*\*\s*\]/.exec(rest);
    if (wildcard !== null) {
      this.at += wildcard[0].length;
      return { kind: "wildcard" };
    }
    if (rest.startsWith("[?(@")) {
      this.at += 4;
      const path = this.segments(true);
      const test = this.test();
      const close = /^\s*\)\s*\]/.exec(this.rest());
      if (close === null) throw new Error(`expected )] at ${JSON.stringify(this.rest())}`);
      this.at += close[0].length;
      return { kind: "filter", path, test };
    }
    throw new Error(`unsupported bracket expression ${JSON.stringify(rest)}`);
  }

  private test(): { op: Comparison; value: Json } | undefined {
    const match =
      /^\s*(==|!=|<=|>=|<|>)\s*("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|-?\d+(?:\.\d+)?|true|false|null)/.exec(
        this.rest(),
      );
    if (match === null) return undefined;
    this.at += match[0].length;
    const literal = match[2] ?? "";
    const value: Json = literal.startsWith("'")
      ? literal.slice(1, -1).replace(/\\(.)/g, "$1")
      : (JSON.parse(literal) as Json);
    return { op: match[1] as Comparison, value };
  }
}
