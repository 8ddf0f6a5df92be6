// A static checker for CEL rules, standing in for cel-go's type checker, which @bufbuild/cel does not
// have: the API server refuses a CRD whose rule names an undeclared variable or function, selects a
// field the schema does not declare, applies an operator to operands it has no overload for (an int
// compared with a string or a double), or does not evaluate to a bool. Types it cannot know stay
// `dyn` and pass, as cel-go lets dyn pass.

import type { parse } from "@bufbuild/cel";
import { LIBRARY_SIGNATURES } from "./cel-library.js";
import {
  BOOL,
  BYTES,
  type CelT,
  compatible,
  DOUBLE,
  DURATION,
  DYN,
  func,
  INT,
  isNumeric,
  join,
  listOf,
  mapOf,
  method,
  NULL,
  overloads,
  type Signature,
  STRING,
  TIMESTAMP,
  TYPE,
  typeName,
  UINT,
} from "./cel-types.js";

type Parsed = ReturnType<typeof parse>;
type Expr = Parsed["expr"];

/** A check failure at an offset of the rule's source. */
export class CelCheckError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
  }
}

export interface CheckResult {
  readonly type: CelT;
  /** Whether the rule reads `oldSelf` (a transition rule). */
  readonly usesOldSelf: boolean;
}

/** Type-checks a parsed rule against its variables; throws CelCheckError. */
export function checkRule(parsed: Parsed, variables: ReadonlyMap<string, CelT>): CheckResult {
  const checker = new Checker(parsed, variables);
  const type = checker.check(parsed.expr);
  return { type, usesOldSelf: checker.used.has("oldSelf") };
}

const TYPE_NAMES = new Set([
  "int",
  "uint",
  "double",
  "string",
  "bool",
  "bytes",
  "list",
  "map",
  "null_type",
  "type",
]);

class Checker {
  readonly used = new Set<string>();
  private readonly scopes: Map<string, CelT>[] = [];

  constructor(
    private readonly parsed: Parsed,
    private readonly variables: ReadonlyMap<string, CelT>,
  ) {}

  check(expr: Expr): CelT {
    const kind = expr.exprKind;
    switch (kind.case) {
      case "constExpr":
        return constType(kind.value.constantKind.case);
      case "identExpr":
        return this.ident(expr, kind.value.name);
      case "selectExpr": {
        const operand = kind.value.operand;
        if (operand === undefined) throw this.error(expr, "invalid select");
        const fieldType = this.select(expr, this.check(operand), kind.value.field);
        return kind.value.testOnly ? BOOL : fieldType;
      }
      case "callExpr":
        return this.call(expr, kind.value.function, kind.value.target, kind.value.args);
      case "listExpr":
        return listOf(kind.value.elements.map((e) => this.check(e)).reduce(join, DYN));
      case "structExpr": {
        if (kind.value.messageName !== "") {
          throw this.error(expr, `undeclared reference to '${kind.value.messageName}' (in container '')`);
        }
        let key = DYN;
        let value = DYN;
        for (const entry of kind.value.entries) {
          if (entry.keyKind.case === "mapKey") key = join(key, this.check(entry.keyKind.value));
          if (entry.value !== undefined) value = join(value, this.check(entry.value));
        }
        return mapOf(key, value);
      }
      case "comprehensionExpr":
        return this.comprehension(expr, kind.value);
      default:
        throw this.error(expr, "unsupported expression");
    }
  }

  private ident(expr: Expr, name: string): CelT {
    for (let i = this.scopes.length - 1; i >= 0; i--) {
      const t = this.scopes[i]?.get(name);
      if (t !== undefined) return t;
    }
    const t = this.variables.get(name);
    if (t !== undefined) {
      this.used.add(name);
      return t;
    }
    if (TYPE_NAMES.has(name)) return TYPE;
    throw this.error(expr, `undeclared reference to '${name}' (in container '')`);
  }

  private select(expr: Expr, operand: CelT, field: string): CelT {
    switch (operand.kind) {
      case "dyn":
        return DYN;
      case "map":
        return operand.value;
      case "object": {
        const t = operand.fields.get(field);
        if (t === undefined) throw this.error(expr, `undefined field '${field}'`);
        return t;
      }
      default:
        throw this.error(expr, `type '${typeName(operand)}' does not support field selection`);
    }
  }

  private call(expr: Expr, name: string, target: Expr | undefined, args: readonly Expr[]): CelT {
    // `sets.contains(…)` parses as a method of an identifier `sets`: a namespaced function.
    const namespace = target?.exprKind.case === "identExpr" ? target.exprKind.value.name : undefined;
    if (namespace !== undefined && !this.isDeclared(namespace) && signatureOf(`${namespace}.${name}`)) {
      return this.apply(expr, `${namespace}.${name}`, undefined, args);
    }
    return this.apply(expr, name, target, args);
  }

  private apply(expr: Expr, name: string, target: Expr | undefined, args: readonly Expr[]): CelT {
    const signature = signatureOf(name);
    if (signature === undefined)
      throw this.error(expr, `undeclared reference to '${name}' (in container '')`);
    const targetType = target === undefined ? undefined : this.check(target);
    const argTypes = args.map((arg) => this.check(arg));
    const result = signature(targetType, argTypes);
    if (result !== undefined) return result;
    const receiver = targetType === undefined ? "" : `${typeName(targetType)}.`;
    const operands = argTypes.map(typeName).join(", ");
    throw this.error(expr, `found no matching overload for '${name}' applied to '${receiver}(${operands})'`);
  }

  private isDeclared(name: string): boolean {
    return this.variables.has(name) || this.scopes.some((scope) => scope.has(name));
  }

  private comprehension(
    expr: Expr,
    c: Extract<Expr["exprKind"], { case: "comprehensionExpr" }>["value"],
  ): CelT {
    if (c.iterRange === undefined || c.accuInit === undefined || c.loopStep === undefined || !c.result) {
      throw this.error(expr, "invalid comprehension");
    }
    const range = this.check(c.iterRange);
    let iterType: CelT;
    if (range.kind === "list") iterType = range.elem;
    else if (range.kind === "map") iterType = range.key;
    else if (range.kind === "dyn") iterType = DYN;
    else {
      throw this.error(
        c.iterRange,
        `expression of type '${typeName(range)}' cannot be range of a comprehension (must be list, map, or dynamic)`,
      );
    }
    const accuInit = this.check(c.accuInit);
    const scope = new Map([[c.accuVar, accuInit]]);
    this.scopes.push(scope);
    try {
      if (c.loopCondition !== undefined) this.check(c.loopCondition);
      scope.set(c.iterVar, iterType);
      const step = this.check(c.loopStep);
      scope.delete(c.iterVar);
      scope.set(c.accuVar, join(accuInit, step));
      return this.check(c.result);
    } finally {
      this.scopes.pop();
    }
  }

  private error(expr: Expr, message: string): CelCheckError {
    return new CelCheckError(message, this.parsed.sourceInfo?.positions[String(expr.id)] ?? 0);
  }
}

function constType(kind: string | undefined): CelT {
  switch (kind) {
    case "boolValue":
      return BOOL;
    case "int64Value":
      return INT;
    case "uint64Value":
      return UINT;
    case "doubleValue":
      return DOUBLE;
    case "stringValue":
      return STRING;
    case "bytesValue":
      return BYTES;
    case "nullValue":
      return NULL;
    default:
      return DYN;
  }
}

function signatureOf(name: string): Signature | undefined {
  return STANDARD[name] ?? LIBRARY_SIGNATURES[name];
}

/** Both operands of one of the given types (dyn matches any); the result is that type. */
function same(allowed: readonly CelT[]): Signature {
  return (t, [a, b, ...rest]) => {
    if (t !== undefined || a === undefined || b === undefined || rest.length > 0) return undefined;
    if (a.kind === "dyn") return b.kind === "dyn" || allowed.includes(b) ? b : undefined;
    if (b.kind === "dyn") return allowed.includes(a) ? a : undefined;
    return allowed.includes(a) && typeName(a) === typeName(b) ? a : undefined;
  };
}

const ORDERED = [STRING, BYTES, BOOL, TIMESTAMP, DURATION];

/** `<`, `<=`, `>`, `>=`: numbers of any kind together (the server allows cross-type numeric comparisons). */
const ordering: Signature = (t, [a, b, ...rest]) => {
  if (t !== undefined || a === undefined || b === undefined || rest.length > 0) return undefined;
  if (a.kind === "dyn" || b.kind === "dyn") return BOOL;
  if (isNumeric(a) && isNumeric(b)) return BOOL;
  return ORDERED.includes(a) && typeName(a) === typeName(b) ? BOOL : undefined;
};

const equality: Signature = (t, args) =>
  t === undefined && args.length === 2 && compatible(args[0] as CelT, args[1] as CelT) ? BOOL : undefined;

const logical: Signature = (t, args) =>
  t === undefined && args.every((arg) => arg.kind === "dyn" || arg === BOOL) ? BOOL : undefined;

const plus: Signature = (t, [a, b, ...rest]) => {
  if (t !== undefined || a === undefined || b === undefined || rest.length > 0) return undefined;
  if (a.kind === "list" && b.kind === "list") return listOf(join(a.elem, b.elem));
  if ((a === TIMESTAMP && b === DURATION) || (a === DURATION && b === TIMESTAMP)) return TIMESTAMP;
  if ((a.kind === "dyn" && b.kind === "list") || (a.kind === "list" && b.kind === "dyn")) return DYN;
  return same([INT, UINT, DOUBLE, STRING, BYTES, DURATION])(t, [a, b]);
};

const minus: Signature = (t, [a, b, ...rest]) => {
  if (t !== undefined || a === undefined || b === undefined || rest.length > 0) return undefined;
  if (a === TIMESTAMP && b === TIMESTAMP) return DURATION;
  if (a === TIMESTAMP && b === DURATION) return TIMESTAMP;
  return same([INT, UINT, DOUBLE, DURATION])(t, [a, b]);
};

const index: Signature = (t, [container, key, ...rest]) => {
  if (t !== undefined || container === undefined || key === undefined || rest.length > 0) return undefined;
  if (container.kind === "dyn") return DYN;
  if (container.kind === "list") return key.kind === "dyn" || isNumeric(key) ? container.elem : undefined;
  if (container.kind === "map") return compatible(container.key, key) ? container.value : undefined;
  return undefined;
};

const membership: Signature = (t, [item, container, ...rest]) => {
  if (t !== undefined || item === undefined || container === undefined || rest.length > 0) return undefined;
  if (container.kind === "dyn") return BOOL;
  if (container.kind === "list") return compatible(item, container.elem) ? BOOL : undefined;
  if (container.kind === "map") return compatible(item, container.key) ? BOOL : undefined;
  return undefined;
};

const conditional: Signature = (t, [condition, a, b, ...rest]) => {
  if (t !== undefined || condition === undefined || a === undefined || b === undefined || rest.length > 0) {
    return undefined;
  }
  if (condition.kind !== "dyn" && condition !== BOOL) return undefined;
  return compatible(a, b) ? join(a, b) : undefined;
};

const sized = (t: CelT | undefined): boolean =>
  t !== undefined &&
  (t.kind === "dyn" || t.kind === "list" || t.kind === "map" || t === STRING || t === BYTES);

const size: Signature = (t, args) => {
  if (t === undefined) return args.length === 1 && sized(args[0]) ? INT : undefined;
  return args.length === 0 && sized(t) ? INT : undefined;
};

/** A conversion function accepting any of `from`. */
const conversion = (result: CelT, from: readonly CelT[]): Signature =>
  overloads(...[result, ...from].map((source) => func([source], result)));

const stringPredicate = overloads(method(STRING, [STRING], BOOL));
const TIME_GETTER = overloads(method(TIMESTAMP, [], INT), method(TIMESTAMP, [STRING], INT));
const TIME_OR_DURATION_GETTER = overloads(TIME_GETTER, method(DURATION, [], INT));

const STANDARD: Readonly<Record<string, Signature>> = {
  "_==_": equality,
  "_!=_": equality,
  "_<_": ordering,
  "_<=_": ordering,
  "_>_": ordering,
  "_>=_": ordering,
  "_&&_": logical,
  "_||_": logical,
  "!_": logical,
  "@not_strictly_false": logical,
  "_+_": plus,
  "_-_": minus,
  "_*_": same([INT, UINT, DOUBLE]),
  "_/_": same([INT, UINT, DOUBLE]),
  "_%_": same([INT, UINT]),
  "-_": (t, args) =>
    t === undefined && args.length === 1 && (args[0]?.kind === "dyn" || args[0] === INT || args[0] === DOUBLE)
      ? (args[0] as CelT)
      : undefined,
  "_[_]": index,
  "@in": membership,
  "_?_:_": conditional,
  size,
  int: conversion(INT, [UINT, DOUBLE, STRING, TIMESTAMP, DYN]),
  uint: conversion(UINT, [INT, DOUBLE, STRING, DYN]),
  double: conversion(DOUBLE, [INT, UINT, STRING, DYN]),
  string: conversion(STRING, [INT, UINT, DOUBLE, BOOL, BYTES, TIMESTAMP, DURATION, DYN]),
  bool: conversion(BOOL, [STRING, DYN]),
  bytes: conversion(BYTES, [STRING, DYN]),
  timestamp: conversion(TIMESTAMP, [STRING, INT, DYN]),
  duration: conversion(DURATION, [STRING, DYN]),
  dyn: (t, args) => (t === undefined && args.length === 1 ? DYN : undefined),
  type: (t, args) => (t === undefined && args.length === 1 ? TYPE : undefined),
  contains: stringPredicate,
  startsWith: stringPredicate,
  endsWith: stringPredicate,
  matches: overloads(method(STRING, [STRING], BOOL), func([STRING, STRING], BOOL)),
  getFullYear: TIME_GETTER,
  getMonth: TIME_GETTER,
  getDayOfYear: TIME_GETTER,
  getDayOfMonth: TIME_GETTER,
  getDate: TIME_GETTER,
  getDayOfWeek: TIME_GETTER,
  getHours: TIME_OR_DURATION_GETTER,
  getMinutes: TIME_OR_DURATION_GETTER,
  getSeconds: TIME_OR_DURATION_GETTER,
  getMilliseconds: TIME_OR_DURATION_GETTER,
};
