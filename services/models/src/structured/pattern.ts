/**
 * JSON Schema's `pattern` (an ECMAScript regular expression the string must match somewhere, no
 * flags), for the subset a grammar can enforce: literals, `.`, classes with ranges and negation,
 * `\d \w \s` and their complements, groups (capturing, `(?:…)`, named), alternation, the quantifiers
 * `* + ? {n} {n,} {n,m}` (lazy ones too: a whole-string match does not care), and `^`/`$` at the ends
 * of the top-level alternatives. What the grammar cannot do (lookarounds, backreferences, word
 * boundaries, `\p{…}`, anchors elsewhere) is refused with the construct named.
 *
 * The pattern is parsed once into a small tree. The grammar (patternRule) writes the JSON text of a
 * string the tree matches, a subset of what it matches where JSON would need escapes it cannot
 * predict (control characters other than \t \n \r, characters outside the Basic Multilingual Plane
 * in classes and `.`): the output always matches. The coordinator checks the output with the
 * pattern itself (RegExp), so what is enforced and what is checked are one regular expression.
 */

/** A pattern the grammar cannot enforce; `message` names the construct. */
export class PatternError extends Error {
  override readonly name = "PatternError";
}

export type RegexNode =
  | { kind: "seq"; items: RegexNode[] }
  | { kind: "alt"; options: RegexNode[] }
  /** A set of code points: `ranges` (inclusive), or everything but them when `negated`. */
  | { kind: "chars"; ranges: Array<[number, number]>; negated: boolean }
  | { kind: "repeat"; item: RegexNode; min: number; max: number | undefined };

export interface CompiledPattern {
  source: string;
  root: RegexNode;
  /** The pattern as ECMAScript reads it: what the output is checked with. */
  regex: RegExp;
}

/** Bounds that keep a pattern's grammar small: llama.cpp expands `{m,n}` into n copies. */
export const PATTERN_LIMITS = { length: 1_000, repeat: 1_024, expanded: 20_000 } as const;

const DIGIT: Array<[number, number]> = [[0x30, 0x39]];
const WORD: Array<[number, number]> = [
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x5f, 0x5f],
  [0x61, 0x7a],
];
// ECMAScript's WhiteSpace and LineTerminator.
const SPACE: Array<[number, number]> = [
  [0x09, 0x0d],
  [0x20, 0x20],
  [0xa0, 0xa0],
  [0x1680, 0x1680],
  [0x2000, 0x200a],
  [0x2028, 0x2029],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
  [0xfeff, 0xfeff],
];
/** `.`: anything but a line terminator. */
const LINE_TERMINATORS: Array<[number, number]> = [
  [0x0a, 0x0a],
  [0x0d, 0x0d],
  [0x2028, 0x2029],
];
const ANY: RegexNode = { kind: "chars", ranges: [], negated: true };

export function compilePattern(source: string): CompiledPattern {
  if (source.length > PATTERN_LIMITS.length) {
    throw new PatternError(`the pattern is longer than ${PATTERN_LIMITS.length} characters`);
  }
  let regex: RegExp;
  try {
    regex = new RegExp(source);
  } catch (e) {
    throw new PatternError(`the pattern is not a valid regular expression (${(e as Error).message})`);
  }
  const root = new Parser(source).parse();
  if (expandedSize(root) > PATTERN_LIMITS.expanded) {
    throw new PatternError("the pattern's repetitions are too large for a grammar");
  }
  expression(root); // refuses a class the output cannot write a character of
  return { source, root, regex };
}

/** The lengths, in characters, of the strings a node matches: [min, max] (max undefined: unbounded). */
function lengths(node: RegexNode): [number, number | undefined] {
  switch (node.kind) {
    case "chars":
      return [1, 1];
    case "seq":
      return node.items.reduce<[number, number | undefined]>(
        ([min, max], item) => {
          const [a, b] = lengths(item);
          return [min + a, max === undefined || b === undefined ? undefined : max + b];
        },
        [0, 0],
      );
    case "alt": {
      const all = node.options.map(lengths);
      const maxes = all.map(([, b]) => b);
      return [
        Math.min(...all.map(([a]) => a)),
        maxes.includes(undefined) ? undefined : Math.max(...(maxes as number[])),
      ];
    }
    case "repeat": {
      const [a, b] = lengths(node.item);
      if (node.max === 0 || b === 0) return [0, 0];
      return [node.min * a, node.max === undefined || b === undefined ? undefined : node.max * b];
    }
  }
}

/**
 * How a repeat `{m,n}` is restricted: `{m + raise, m + raise + cap}` within its own bounds (cap
 * undefined: its own most, unbounded for `{m,}`).
 */
interface Restriction {
  raise: number;
  cap: number | undefined;
}

/** The node with each repeat restricted as `restrictions` says. */
function restrict(node: RegexNode, restrictions: Map<RegexNode, Restriction>): RegexNode {
  switch (node.kind) {
    case "chars":
      return node;
    case "seq":
      return { kind: "seq", items: node.items.map((n) => restrict(n, restrictions)) };
    case "alt":
      return { kind: "alt", options: node.options.map((n) => restrict(n, restrictions)) };
    case "repeat": {
      const item = restrict(node.item, restrictions);
      const r = restrictions.get(node);
      if (r === undefined) return { ...node, item };
      // A bounded repeat stays within its own bounds (a raise or cap past them changes nothing).
      const most = node.max ?? Number.POSITIVE_INFINITY;
      const min = Math.min(node.min + r.raise, most);
      return { kind: "repeat", item, min, max: r.cap === undefined ? node.max : Math.min(min + r.cap, most) };
    }
  }
}

/** The repeats of a tree, outermost first. */
function repeatsOf(node: RegexNode, out: RegexNode[] = []): RegexNode[] {
  if (node.kind === "repeat") {
    out.push(node);
    repeatsOf(node.item, out);
  } else if (node.kind === "seq") for (const n of node.items) repeatsOf(n, out);
  else if (node.kind === "alt") for (const n of node.options) repeatsOf(n, out);
  return out;
}

/**
 * The pattern restricted to strings of `minLength` to `maxLength` characters, as JSON Schema asks
 * when both stand beside it (zod's `.email().max(255)`, `.regex(…).min(1)`), by restricting its
 * repeats, one iteration at a time and each in turn: their least counts raised (repeats of characters
 * first, then repeats of groups; a bounded one up to its most) while that lengthens the shortest
 * match, until every match is long enough; then cut to their least counts and given extra
 * iterations back while the longest match still fits: the repeats of groups that hold
 * repeats (an e-mail's domain labels) up to two, then the repeats within them (each label's letters)
 * until none fits more, so that the length goes to the parts rather than to their number. What the
 * grammar writes is then a subset of what the expression matches within the bounds (the output is
 * still checked with the expression and the bounds). Throws PatternError where no such restriction
 * exists (a branch without a repetition that is too short, bounded parts too long).
 */
export function boundedPattern(
  pattern: CompiledPattern,
  minLength: number,
  maxLength: number | undefined,
): CompiledPattern {
  const repeats = repeatsOf(pattern.root);
  /** Repeats of groups that hold repeats, and the others (of characters, or of groups without). */
  const outer = repeats.filter((r) => r.kind === "repeat" && repeatsOf(r.item).length > 0);
  const inner = repeats.filter((r) => !outer.includes(r));
  const restrictions = new Map<RegexNode, Restriction>(repeats.map((r) => [r, { raise: 0, cap: undefined }]));
  const measure = () => lengths(restrict(pattern.root, restrictions));
  /**
   * Grows each of `which` in turn by one (at most `limit` times each) while `keeps(before, after)`
   * holds; stops when none may grow.
   */
  const grow = (
    which: RegexNode[],
    step: (r: Restriction, by: number) => number,
    keeps: (before: [number, number | undefined], after: [number, number | undefined]) => boolean,
    limit = Number.POSITIVE_INFINITY,
  ) => {
    const active = new Set(which);
    while (active.size > 0) {
      for (const repeat of [...active]) {
        const r = restrictions.get(repeat) as Restriction;
        const before = measure();
        if (step(r, 1) > limit || !keeps(before, measure())) {
          step(r, -1);
          active.delete(repeat);
        }
      }
    }
  };
  const raise = (r: Restriction, by: number) => {
    r.raise += by;
    return r.raise;
  };
  const lengthens = ([min]: [number, number | undefined], [after]: [number, number | undefined]) =>
    after > min && min < minLength;
  // A bounded repeat's least count rises at most to its most (restrict clamps it: no longer lengthens).
  for (const which of [inner, outer]) if (measure()[0] < minLength) grow(which, raise, lengthens);
  if (measure()[0] < minLength) {
    throw new PatternError(
      `the pattern matches strings shorter than minLength ${minLength} that no repetition lengthens`,
    );
  }
  if (maxLength !== undefined && (measure()[1] ?? Number.POSITIVE_INFINITY) > maxLength) {
    for (const r of restrictions.values()) r.cap = 0;
    if ((measure()[1] ?? Number.POSITIVE_INFINITY) > maxLength) {
      throw new PatternError(
        `the pattern's matches cannot all be within minLength ${minLength} and maxLength ${maxLength}`,
      );
    }
    const cap = (r: Restriction, by: number) => {
      r.cap = (r.cap ?? 0) + by;
      return r.cap;
    };
    const fits = ([, max]: [number, number | undefined], [, after]: [number, number | undefined]) =>
      after !== undefined && max !== undefined && after > max && after <= maxLength;
    grow(outer, cap, fits, 2);
    grow(inner, cap, fits);
  }
  const root = restrict(pattern.root, restrictions);
  if (expandedSize(root) > PATTERN_LIMITS.expanded) {
    throw new PatternError("the pattern's repetitions within its length bounds are too large for a grammar");
  }
  return { ...pattern, root };
}

/**
 * The GBNF expression of the JSON string (quotes included) of a string the pattern matches/**
 * The GBNF expression of the JSON string (quotes included) of a string the pattern matches: each
 * character as JSON writes it (`"` and `\` escaped, \t \n \r as escapes, other control
 * characters and characters outside the Basic Multilingual Plane left out).
 */
export function patternExpression(pattern: CompiledPattern): string {
  return `"\\"" ${expression(pattern.root)} "\\""`;
}

function expression(node: RegexNode): string {
  switch (node.kind) {
    case "seq":
      return node.items.length === 0 ? '""' : `(${node.items.map(expression).join(" ")})`;
    case "alt":
      return `(${node.options.map(expression).join(" | ")})`;
    case "repeat": {
      const { min, max } = node;
      const suffix =
        max === undefined
          ? min === 0
            ? "*"
            : min === 1
              ? "+"
              : `{${min},}`
          : min === 0 && max === 1
            ? "?"
            : min === max
              ? `{${min}}`
              : `{${min},${max}}`;
      return `(${expression(node.item)})${suffix}`;
    }
    case "chars":
      return characters(node);
  }
}

/** Code points a JSON string holds unescaped in the grammar: printable, not `"` or `\`, in the BMP. */
const PLAIN: Array<[number, number]> = [
  [0x20, 0x21],
  [0x23, 0x5b],
  [0x5d, 0x7e],
  [0x80, 0xd7ff],
  [0xe000, 0xffff],
];
/** Characters written as a two-character JSON escape, and the GBNF literal of that escape. */
const ESCAPED: Array<[number, string]> = [
  [0x22, String.raw`"\\\""`],
  [0x5c, String.raw`"\\\\"`],
  [0x09, String.raw`"\\t"`],
  [0x0a, String.raw`"\\n"`],
  [0x0d, String.raw`"\\r"`],
];

function characters(node: Extract<RegexNode, { kind: "chars" }>): string {
  const inSet = (cp: number) => node.ranges.some(([a, b]) => cp >= a && cp <= b) !== node.negated;
  const allowed = node.negated ? subtract(PLAIN, node.ranges) : intersect(PLAIN, node.ranges);
  const alternatives: string[] = [];
  if (allowed.length > 0) {
    const hex = (cp: number) => `\\u${cp.toString(16).padStart(4, "0")}`;
    alternatives.push(`[${allowed.map(([a, b]) => (a === b ? hex(a) : `${hex(a)}-${hex(b)}`)).join("")}]`);
  }
  for (const [cp, written] of ESCAPED) if (inSet(cp)) alternatives.push(written);
  if (alternatives.length === 0) {
    throw new PatternError(
      "a class matching no character the output can write is not supported in 'pattern'",
    );
  }
  return alternatives.length === 1 ? (alternatives[0] as string) : `(${alternatives.join(" | ")})`;
}

function intersect(a: Array<[number, number]>, b: Array<[number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const [a0, a1] of a)
    for (const [b0, b1] of b) {
      const lo = Math.max(a0, b0);
      const hi = Math.min(a1, b1);
      if (lo <= hi) out.push([lo, hi]);
    }
  return merge(out);
}

function subtract(a: Array<[number, number]>, b: Array<[number, number]>): Array<[number, number]> {
  let out = a;
  for (const [b0, b1] of b) {
    const next: Array<[number, number]> = [];
    for (const [a0, a1] of out) {
      if (b1 < a0 || b0 > a1) next.push([a0, a1]);
      else {
        if (a0 < b0) next.push([a0, b0 - 1]);
        if (a1 > b1) next.push([b1 + 1, a1]);
      }
    }
    out = next;
  }
  return merge(out);
}

function merge(ranges: Array<[number, number]>): Array<[number, number]> {
  const sorted = [...ranges].sort((x, y) => x[0] - y[0]);
  const out: Array<[number, number]> = [];
  for (const r of sorted) {
    const last = out.at(-1);
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}

/** How many nodes the grammar holds once llama.cpp expands every bounded repetition. */
function expandedSize(node: RegexNode): number {
  switch (node.kind) {
    case "chars":
      return 1;
    case "seq":
      return node.items.reduce((sum, n) => sum + expandedSize(n), 1);
    case "alt":
      return node.options.reduce((sum, n) => sum + expandedSize(n), 1);
    case "repeat":
      return expandedSize(node.item) * Math.max(1, node.max ?? node.min + 1);
  }
}

class Parser {
  private i = 0;

  constructor(private readonly s: string) {}

  /** Top level: alternatives, each anchored or searched for (JSON Schema matches anywhere). */
  parse(): RegexNode {
    const options: RegexNode[] = [];
    for (;;) {
      const anchoredStart = this.s[this.i] === "^";
      if (anchoredStart) this.i++;
      const items = this.sequence(true);
      let anchoredEnd = false;
      if (this.s[this.i] === "$") {
        anchoredEnd = true;
        this.i++;
      }
      if (this.i < this.s.length && this.s[this.i] !== "|") this.fail("'$' anywhere but at the end");
      const parts: RegexNode[] = [];
      if (!anchoredStart) parts.push({ kind: "repeat", item: ANY, min: 0, max: undefined });
      parts.push(...items);
      if (!anchoredEnd) parts.push({ kind: "repeat", item: ANY, min: 0, max: undefined });
      options.push({ kind: "seq", items: parts });
      if (this.i >= this.s.length) break;
      this.i++; // "|"
    }
    return options.length === 1 ? (options[0] as RegexNode) : { kind: "alt", options };
  }

  private fail(what: string): never {
    throw new PatternError(`${what} is not supported in 'pattern' (at character ${this.i + 1})`);
  }

  /** Terms up to "|", ")" or the end (at the top level, also a final "$"). */
  private sequence(top: boolean): RegexNode[] {
    const items: RegexNode[] = [];
    while (this.i < this.s.length) {
      const c = this.s[this.i] as string;
      if (c === "|" || c === ")") break;
      if (c === "$" && top && (this.i + 1 === this.s.length || this.s[this.i + 1] === "|")) break;
      items.push(this.quantified(this.atom()));
    }
    return items;
  }

  private alternation(): RegexNode {
    const options: RegexNode[] = [];
    for (;;) {
      options.push({ kind: "seq", items: this.sequence(false) });
      if (this.s[this.i] !== "|") break;
      this.i++;
    }
    return options.length === 1 ? (options[0] as RegexNode) : { kind: "alt", options };
  }

  private atom(): RegexNode {
    const c = this.s[this.i] as string;
    switch (c) {
      case "(": {
        this.i++;
        if (this.s[this.i] === "?") {
          const kind = this.s.slice(this.i, this.i + 3);
          if (kind.startsWith("?:")) this.i += 2;
          else if (kind.startsWith("?<") && kind !== "?<=" && kind !== "?<!") {
            const close = this.s.indexOf(">", this.i);
            if (close < 0) this.fail("an unclosed group name");
            this.i = close + 1;
          } else this.fail("a lookaround");
        }
        const inner = this.alternation();
        if (this.s[this.i] !== ")") this.fail("an unclosed group");
        this.i++;
        return inner;
      }
      case "[":
        return this.characterClass();
      case ".":
        this.i++;
        return { kind: "chars", ranges: LINE_TERMINATORS, negated: true };
      case "\\":
        return this.escape(false);
      case "^":
      case "$":
        return this.fail(`'${c}' anywhere but at the ends`);
      case "*":
      case "+":
      case "?":
        return this.fail("a quantifier with nothing before it");
      default: {
        const cp = this.s.codePointAt(this.i) as number;
        // Without the u flag ECMAScript reads it as two code units, which a quantifier splits.
        if (cp > 0xffff) this.fail("a character outside the Basic Multilingual Plane");
        this.i++;
        return literal(cp);
      }
    }
  }

  private quantified(item: RegexNode): RegexNode {
    const c = this.s[this.i];
    let min: number;
    let max: number | undefined;
    if (c === "*" || c === "+" || c === "?") {
      this.i++;
      [min, max] = c === "*" ? [0, undefined] : c === "+" ? [1, undefined] : [0, 1];
    } else if (c === "{") {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.s.slice(this.i));
      if (!m) return item; // a literal "{" (ECMAScript without the u flag)
      this.i += m[0].length;
      min = Number(m[1]);
      max = m[2] === undefined ? min : m[3] === "" ? undefined : Number(m[3]);
      if (min > PATTERN_LIMITS.repeat || (max !== undefined && max > PATTERN_LIMITS.repeat)) {
        this.fail(`a repetition over ${PATTERN_LIMITS.repeat}`);
      }
    } else return item;
    if (this.s[this.i] === "?") this.i++; // lazy: the same strings match the whole
    // (A quantifier right after this one is a syntax error ECMAScript has refused already.)
    return { kind: "repeat", item, min, max };
  }

  /** An escape outside (or, with `inClass`, inside) a class. */
  private escape(inClass: boolean): RegexNode {
    this.i++; // "\"
    const c = this.s[this.i];
    if (c === undefined) this.fail("a trailing backslash");
    this.i++;
    switch (c) {
      case "d":
        return { kind: "chars", ranges: DIGIT, negated: false };
      case "D":
        return { kind: "chars", ranges: DIGIT, negated: true };
      case "w":
        return { kind: "chars", ranges: WORD, negated: false };
      case "W":
        return { kind: "chars", ranges: WORD, negated: true };
      case "s":
        return { kind: "chars", ranges: SPACE, negated: false };
      case "S":
        return { kind: "chars", ranges: SPACE, negated: true };
      case "t":
        return literal(0x09);
      case "n":
        return literal(0x0a);
      case "r":
        return literal(0x0d);
      case "f":
        return literal(0x0c);
      case "v":
        return literal(0x0b);
      case "b":
        if (inClass) return literal(0x08);
        return this.fail("a word boundary (\\b)");
      case "0":
        if (/[0-9]/.test(this.s[this.i] ?? "")) this.fail("an octal escape");
        return literal(0);
      case "x":
      case "u": {
        const digits = c === "x" ? 2 : 4;
        const hex = this.s.slice(this.i, this.i + digits);
        if (!new RegExp(`^[0-9a-fA-F]{${digits}}$`).test(hex))
          this.fail(`an escape \\${c} without ${digits} hex digits`);
        this.i += digits;
        return literal(Number.parseInt(hex, 16));
      }
      default:
        if (/[A-Za-z0-9]/.test(c as string)) return this.fail(`the escape \\${c}`);
        return literal((c as string).codePointAt(0) as number);
    }
  }

  private characterClass(): RegexNode {
    this.i++; // "["
    let negated = false;
    if (this.s[this.i] === "^") {
      negated = true;
      this.i++;
    }
    const ranges: Array<[number, number]> = [];
    const single = (): Array<[number, number]> | number => {
      const c = this.s[this.i];
      if (c === undefined) this.fail("an unclosed class");
      if (c === "\\") {
        const node = this.escape(true);
        if (node.kind !== "chars") return this.fail("a class escape");
        if (node.negated) return this.fail("a negated class escape (\\D, \\W, \\S) inside a class");
        const only = node.ranges.length === 1 ? (node.ranges[0] as [number, number]) : undefined;
        return only && only[0] === only[1] ? only[0] : node.ranges;
      }
      const cp = this.s.codePointAt(this.i) as number;
      if (cp > 0xffff) this.fail("a character outside the Basic Multilingual Plane inside a class");
      this.i++;
      return cp;
    };
    while (this.s[this.i] !== "]") {
      const from = single();
      if (typeof from !== "number") {
        ranges.push(...from);
        continue;
      }
      if (this.s[this.i] === "-" && this.s[this.i + 1] !== "]" && this.s[this.i + 1] !== undefined) {
        this.i++;
        const to = single();
        if (typeof to !== "number") this.fail("a range ending in a class escape");
        if (to < from) this.fail("a range out of order");
        ranges.push([from, to]);
      } else ranges.push([from, from]);
    }
    this.i++; // "]"
    return { kind: "chars", ranges, negated };
  }
}

function literal(cp: number): RegexNode {
  return { kind: "chars", ranges: [[cp, cp]], negated: false };
}
