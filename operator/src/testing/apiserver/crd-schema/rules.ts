// x-kubernetes-validations: compiled with the CRD (apiserver/schema/cel/compilation.go, the checks
// of apiextensions validation.go), then run against objects (apiserver/schema/cel/validation.go):
// every rule of every non-null node, `oldSelf` bound to the correlated old value (by key in objects
// and maps, by the list-map keys in list-type map lists), transition rules only when that old value
// exists unless `optionalOldSelf: true`, which binds it as an optional instead.

import { isCelError } from "@bufbuild/cel";
import { duplicate, forbidden, GoRepr, invalid, OMIT, quote, required } from "./causes.js";
import {
  type Bindings,
  type CompiledExpression,
  compileExpression,
  evaluationError,
  type Program,
  toCel,
} from "./cel.js";
import { celOptional } from "./cel-library.js";
import { BOOL, type CelT, declType, optionalOf, STRING } from "./cel-types.js";
import { child, index, key } from "./paths.js";
import { additional } from "./prune.js";
import { isObject, type JsonObject, type RuleSpec, type SchemaNode } from "./schema.js";
import type { FieldCause, Json } from "./types.js";

interface CompiledRule {
  readonly spec: RuleSpec;
  readonly program: Program;
  readonly message: Program | undefined;
  readonly usesOldSelf: boolean;
  /** The rule's fieldPath as a field path ("spec.port"), "" when it has none. */
  readonly fieldPath: string;
}

/** The compiled rules of one schema, ready to validate objects. */
export class RuleSet {
  constructor(
    private readonly byNode: ReadonlyMap<SchemaNode, readonly CompiledRule[]>,
    /** Nodes with a rule at or below them: validation skips the other subtrees. */
    private readonly withRules: ReadonlySet<SchemaNode>,
  ) {}

  /** Runs the rules on `value` (and the correlated `old` on update) from `node` down. */
  validate(
    value: Json,
    old: Json | undefined,
    node: SchemaNode,
    field: string,
    isResource: boolean,
  ): FieldCause[] {
    const out: FieldCause[] = [];
    this.walk(value, old, node, field, isResource, out);
    return out;
  }

  private walk(
    value: Json,
    old: Json | undefined,
    node: SchemaNode,
    field: string,
    isResource: boolean,
    out: FieldCause[],
  ): void {
    // Rules only see non-null values: a rule on the parent checks for null or absence.
    if (value === null || !this.withRules.has(node)) return;
    const rules = this.byNode.get(node);
    if (rules !== undefined) runRules(rules, value, old ?? undefined, node, field, isResource, out);
    if (Array.isArray(value)) {
      const items = node.items;
      if (items === undefined) return;
      const oldItem = correlate(node, old);
      value.forEach((item, i) => {
        this.walk(item, oldItem(item), items, index(field, i), items.embeddedResource, out);
      });
    } else if (isObject(value)) {
      const oldObject = isObject(old) ? old : undefined;
      const values = additional(node);
      for (const [name, item] of Object.entries(value)) {
        const property = node.properties?.get(name);
        if (property !== undefined) {
          this.walk(item, oldObject?.[name], property, child(field, name), property.embeddedResource, out);
        } else if (values !== undefined) {
          this.walk(item, oldObject?.[name], values, key(field, name), values.embeddedResource, out);
        }
      }
    }
  }
}

/** The old item of a list-type map list with the same keys; other lists cannot be correlated. */
function correlate(node: SchemaNode, old: Json | undefined): (item: Json) => Json | undefined {
  if (node.listType !== "map" || !Array.isArray(old)) return () => undefined;
  const keyOf = (item: JsonObject) =>
    JSON.stringify(node.listMapKeys.map((k) => item[k] ?? node.items?.properties?.get(k)?.default ?? null));
  const byKey = new Map(old.filter(isObject).map((item) => [keyOf(item), item]));
  return (item) => (isObject(item) ? byKey.get(keyOf(item)) : undefined);
}

function runRules(
  rules: readonly CompiledRule[],
  value: Json,
  old: Json | undefined,
  node: SchemaNode,
  field: string,
  isResource: boolean,
  out: FieldCause[],
): void {
  const self = toCel(value, node, isResource);
  const oldSelf = old === undefined || old === null ? undefined : toCel(old, node, isResource);
  const bindings: Bindings = oldSelf === undefined ? { self } : { self, oldSelf };
  for (const rule of rules) {
    const optional = rule.spec.optionalOldSelf === true;
    if (rule.usesOldSelf && oldSelf === undefined && !optional) continue;
    const result = rule.program(optional ? { self, oldSelf: celOptional(oldSelf) } : bindings);
    if (isCelError(result)) {
      const error = evaluationError(result);
      const detail = /^(found no matching overload|no such overload)/.test(error)
        ? `'no such overload': call arguments did not match a supported operator, function or macro signature for rule: ${ruleErrorString(rule.spec)}`
        : `${error} evaluating rule: ${ruleErrorString(rule.spec)}`;
      out.push(invalid(field, node.type ?? "", detail));
      continue;
    }
    if (result === true) continue;
    const detail = messageOf(rule, bindings);
    const target = rule.fieldPath === "" ? field : child(field, rule.fieldPath);
    const bad = node.type === "object" || node.type === "array" ? OMIT : value;
    out.push(causeFor(rule.spec.reason, target, bad, detail));
  }
}

/** celconfig.MaxEvaluatedMessageExpressionSizeBytes. */
const MAX_MESSAGE_BYTES = 5 * 1024;

/** The messageExpression's string; its errors (and empty results) fall back to the message. */
function messageOf(rule: CompiledRule, bindings: Bindings): string {
  const fallback =
    rule.spec.message === undefined || rule.spec.message === ""
      ? `failed rule: ${ruleErrorString(rule.spec)}`
      : rule.spec.message.trim();
  if (rule.message === undefined) return fallback;
  const result = rule.message(bindings);
  if (typeof result !== "string") return fallback;
  const text = result.trim();
  return text === "" || text.includes("\n") || text.length > MAX_MESSAGE_BYTES ? fallback : text;
}

function ruleErrorString(spec: RuleSpec): string {
  return spec.message !== undefined && spec.message !== "" ? spec.message.trim() : spec.rule.trim();
}

function causeFor(
  reason: string | undefined,
  field: string,
  value: Json | typeof OMIT,
  detail: string,
): FieldCause {
  switch (reason) {
    case "FieldValueForbidden":
      return forbidden(field, detail);
    case "FieldValueRequired":
      return required(field, detail);
    case "FieldValueDuplicate":
      return duplicate(field, value);
    default:
      return invalid(field, value, detail);
  }
}

/**
 * Compiles the rules of a schema; `path` is the schema's path in the CRD for the causes
 * (`spec.versions[0].schema.openAPIV3Schema`).
 */
export function compileRules(root: SchemaNode, path: string): { rules: RuleSet; causes: FieldCause[] } {
  const byNode = new Map<SchemaNode, CompiledRule[]>();
  const withRules = new Set<SchemaNode>();
  const causes: FieldCause[] = [];

  const visit = (
    node: SchemaNode,
    at: string,
    isResource: boolean,
    uncorrelatable: string | undefined,
  ): boolean => {
    let found = false;
    if (node.validations.length > 0) {
      const compiled = compileNodeRules(node, at, isResource, uncorrelatable, causes);
      if (compiled.length > 0) byNode.set(node, compiled);
      found = compiled.length > 0;
    }
    for (const [name, property] of node.properties ?? []) {
      found =
        visit(property, key(`${at}.properties`, name), property.embeddedResource, uncorrelatable) || found;
    }
    const values = additional(node);
    if (values !== undefined) {
      found = visit(values, `${at}.additionalProperties`, values.embeddedResource, uncorrelatable) || found;
    }
    if (node.items !== undefined) {
      // Only list-type map items can be correlated with their old versions.
      const itemsUncorrelatable = node.listType === "map" ? uncorrelatable : (uncorrelatable ?? at);
      found = visit(node.items, `${at}.items`, node.items.embeddedResource, itemsUncorrelatable) || found;
    }
    if (found) withRules.add(node);
    return found;
  };
  visit(root, path, true, undefined);
  return { rules: new RuleSet(byNode, withRules), causes };
}

function compileNodeRules(
  node: SchemaNode,
  at: string,
  isResource: boolean,
  uncorrelatable: string | undefined,
  causes: FieldCause[],
): CompiledRule[] {
  const self = declType(node, isResource);
  const plain = new Map<string, CelT>([
    ["self", self],
    ["oldSelf", self],
  ]);
  const compiled: CompiledRule[] = [];
  node.validations.forEach((spec, i) => {
    const entry = `${at}.x-kubernetes-validations[${i}]`;
    if (spec.rule.trim() === "") return;
    const variables = spec.optionalOldSelf ? new Map([...plain, ["oldSelf", optionalOf(self)]]) : plain;
    const rule = compileExpression(spec.rule, variables);
    const errorsBefore = causes.length;
    if ("error" in rule) {
      causes.push(invalid(`${entry}.rule`, ruleRepr(spec), `compilation failed: ${rule.error}`));
    } else if (rule.type !== BOOL && rule.type.kind !== "dyn") {
      causes.push(invalid(`${entry}.rule`, ruleRepr(spec), "cel expression must evaluate to a bool"));
    } else if (rule.usesOldSelf && uncorrelatable !== undefined) {
      const detail = `oldSelf cannot be used on the uncorrelatable portion of the schema within ${uncorrelatable}`;
      causes.push(invalid(`${entry}.rule`, spec.rule, detail));
    } else if (!rule.usesOldSelf && spec.optionalOldSelf !== undefined) {
      causes.push(
        invalid(
          `${entry}.optionalOldSelf`,
          spec.optionalOldSelf,
          "may not be set if oldSelf is not used in rule",
        ),
      );
    }
    const message = compileMessage(spec, plain, entry, causes);
    const fieldPath =
      spec.fieldPath === undefined || spec.fieldPath === "" ? "" : normalizeFieldPath(spec.fieldPath, node);
    if (fieldPath === undefined) {
      causes.push(invalid(`${entry}.fieldPath`, spec.fieldPath ?? "", "fieldPath must be a valid path"));
    }
    if (causes.length > errorsBefore || "error" in rule || fieldPath === undefined) return;
    compiled.push({
      spec,
      program: rule.program,
      message: message?.program,
      usesOldSelf: rule.usesOldSelf,
      fieldPath,
    });
  });
  return compiled;
}

function compileMessage(
  spec: RuleSpec,
  variables: ReadonlyMap<string, CelT>,
  entry: string,
  causes: FieldCause[],
): CompiledExpression | undefined {
  if (spec.messageExpression === undefined || spec.messageExpression.trim() === "") return undefined;
  const message = compileExpression(spec.messageExpression, variables);
  if ("error" in message) {
    const detail = `messageExpression compilation failed: ${message.error}`;
    causes.push(invalid(`${entry}.messageExpression`, ruleRepr(spec), detail));
    return undefined;
  }
  if (message.type !== STRING && message.type.kind !== "dyn") {
    causes.push(invalid(`${entry}.messageExpression`, ruleRepr(spec), "must evaluate to a string"));
    return undefined;
  }
  return message;
}

/**
 * A rule's fieldPath (`.spec.port`, `['a.b']` for a map key) checked against the schema and turned
 * into a field path, or undefined when it does not name a declared field (cel.ValidFieldPath).
 */
function normalizeFieldPath(fieldPath: string, node: SchemaNode): string | undefined {
  const segment = /\.([^.[\]]+)|\['((?:[^'\\]|\\.)*)'\]/y;
  let path = "";
  let at: SchemaNode | undefined = node;
  let offset = 0;
  while (offset < fieldPath.length) {
    segment.lastIndex = offset;
    const match = segment.exec(fieldPath);
    if (match === null || at === undefined) return undefined;
    offset = segment.lastIndex;
    const name = match[1] ?? (match[2] ?? "").replace(/\\(.)/g, "$1");
    if (at.properties !== undefined) {
      at = at.properties.get(name);
      if (at === undefined) return undefined;
      path = child(path, name);
    } else if (at.additionalProperties !== undefined) {
      at = additional(at);
      path = key(path, name);
    } else {
      return undefined;
    }
  }
  return path;
}

/** The rule as the server prints it in CRD errors: Go's %#v of apiextensions.ValidationRule. */
function ruleRepr(spec: RuleSpec): GoRepr {
  const pointer = (type: string, value: string | boolean | undefined) =>
    value === undefined
      ? `(*${type})(nil)`
      : `(*${type})(${typeof value === "string" ? quote(value) : value})`;
  return new GoRepr(
    `apiextensions.ValidationRule{Rule:${quote(spec.rule)}, Message:${quote(spec.message ?? "")}, ` +
      `MessageExpression:${quote(spec.messageExpression ?? "")}, ` +
      `Reason:${pointer("apiextensions.FieldValueErrorReason", spec.reason)}, ` +
      `FieldPath:${quote(spec.fieldPath ?? "")}, OptionalOldSelf:${pointer("bool", spec.optionalOldSelf)}}`,
  );
}
