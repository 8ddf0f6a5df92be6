import { describe, expect, test } from "vitest";
import { compiled, crdWith, specSchema, thing } from "./fixtures.js";
import { compileCrd } from "./index.js";
import type { Json } from "./types.js";

type JsonObject = { [key: string]: Json };

const SPEC: JsonObject = {
  type: "object",
  properties: {
    name: { type: "string" },
    optional: { type: "string" },
    count: { type: "integer" },
    ratio: { type: "number" },
    tags: { type: "array", items: { type: "string" } },
    labels: { type: "object", additionalProperties: { type: "string" } },
    nested: { type: "object", properties: { a: { type: "integer" } } },
    when: { type: "string", format: "date-time" },
    timeout: { type: "string", format: "duration" },
    data: { type: "string", format: "byte" },
    port: { "x-kubernetes-int-or-string": true },
    url: { type: "string" },
  },
};

const VALUE: JsonObject = {
  name: "web-1",
  count: 3,
  ratio: 0.5,
  tags: ["a", "b", "c"],
  labels: { app: "web" },
  nested: { a: 1 },
  when: "2024-01-01T00:00:00Z",
  timeout: "90s",
  data: "aGVsbG8=",
  port: 8080,
  url: "https://example.com:8443/path?q=1",
};

/** The causes for VALUE under a spec holding these rules (the CRD must compile). */
function evaluate(rules: JsonObject[], value: Json = VALUE, old?: Json) {
  const version = compiled(crdWith(specSchema({ ...SPEC, "x-kubernetes-validations": rules })));
  return version.validate(thing(value), old === undefined ? undefined : thing(old));
}

/** The causes refusing a CRD whose spec holds this rule. */
function refusal(rule: JsonObject, spec: JsonObject = SPEC) {
  return compileCrd(crdWith(specSchema({ ...spec, "x-kubernetes-validations": [rule] }))).causes;
}

const RULE_PATH = "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0]";

describe("CEL rules", () => {
  const holding = [
    "self.count > 2 && self.count < 4",
    "self.ratio == 0.5 && self.count == 3",
    "self.ratio < self.count",
    "size(self.tags) == 3 && self.tags.size() == 3 && size(self.name) == 5",
    "has(self.nested) && has(self.nested.a) && !has(self.optional)",
    "'b' in self.tags && 'app' in self.labels && !('x' in self.labels)",
    "self.labels.app == 'web' && self.labels['app'] == 'web'",
    "self.tags.all(t, size(t) == 1) && self.tags.exists(t, t == 'c') && self.tags.exists_one(t, t == 'a')",
    "self.tags.map(t, t + '!') == ['a!', 'b!', 'c!'] && self.tags.filter(t, t != 'a') == ['b', 'c']",
    "self.labels.all(k, k.startsWith('a'))",
    "self.name.startsWith('web') && self.name.endsWith('-1') && self.name.contains('b-')",
    "self.name.matches('^[a-z]+-[0-9]$')",
    "self.count > 1 ? self.name == 'web-1' : false",
    "self.nested == {'a': 1} && self.tags == ['a', 'b', 'c']",
    "self.when < timestamp('2025-01-01T00:00:00Z') && self.when.getFullYear() == 2024",
    "self.timeout == duration('1m30s') && self.data == b'hello'",
    "self.port == 8080",
    "self.name.split('-') == ['web', '1'] && self.name.upperAscii() == 'WEB-1'",
    "self.name.replace('-', '_') == 'web_1' && self.name.indexOf('-') == 3 && self.name.substring(0, 3) == 'web'",
    "self.tags.join(',') == 'a,b,c'",
    "self.tags.isSorted() && [1, 2, 3].sum() == 6 && [3, 1].min() == 1 && self.tags.indexOf('b') == 1",
    "self.name.find('[0-9]+') == '1' && self.url.findAll('[0-9]+') == ['8443', '1']",
    "isURL(self.url) && url(self.url).getHost() == 'example.com:8443' && url(self.url).getScheme() == 'https'",
    "url(self.url).getPort() == '8443' && url(self.url).getEscapedPath() == '/path' && !isURL('not a url')",
    "sets.contains(self.tags, ['a']) && sets.intersects(self.tags, ['c', 'z']) && sets.equivalent(['a', 'b'], ['b', 'a'])",
    "self.count / 2 == 1 && self.ratio * 2.0 == 1.0 && double(self.count) / 2.0 == 1.5 && int('42') == 42",
    "type(self.count) == int && type(self.ratio) == double",
  ];
  test.each(holding)("%s holds", (rule) => {
    expect(evaluate([{ rule }])).toEqual([]);
  });

  test("a failing rule on an object is reported without its value, with the default message", () => {
    expect(evaluate([{ rule: "self.count > 5" }])).toEqual([
      { reason: "FieldValueInvalid", field: "spec", message: "Invalid value: failed rule: self.count > 5" },
    ]);
  });

  test("a failing rule on a scalar shows the value; messageExpression, reasons and fieldPath apply", () => {
    const schema = specSchema({
      type: "object",
      properties: {
        count: {
          type: "integer",
          "x-kubernetes-validations": [
            { rule: "self < 2", messageExpression: "'count is ' + string(self)" },
            { rule: "self < 2", message: "too many", reason: "FieldValueForbidden" },
            { rule: "self < 2", message: "needed", reason: "FieldValueRequired" },
            { rule: "self < 2", reason: "FieldValueDuplicate" },
            { rule: "self < 2", message: "fallback", messageExpression: "''" },
          ],
        },
        nested: {
          type: "object",
          properties: { a: { type: "integer" } },
          "x-kubernetes-validations": [{ rule: "self.a == 0", message: "a must be 0", fieldPath: ".a" }],
        },
      },
    });
    const version = compiled(crdWith(schema));
    expect(version.validate(thing({ count: 3, nested: { a: 1 } }))).toEqual([
      { reason: "FieldValueInvalid", field: "spec.count", message: "Invalid value: 3: count is 3" },
      { reason: "FieldValueForbidden", field: "spec.count", message: "Forbidden: too many" },
      { reason: "FieldValueRequired", field: "spec.count", message: "Required value: needed" },
      { reason: "FieldValueDuplicate", field: "spec.count", message: "Duplicate value: 3" },
      { reason: "FieldValueInvalid", field: "spec.count", message: "Invalid value: 3: fallback" },
      { reason: "FieldValueInvalid", field: "spec.nested.a", message: "Invalid value: a must be 0" },
    ]);
  });

  test("an evaluation error is reported with the rule", () => {
    expect(evaluate([{ rule: "self.optional == 'x'" }])).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec",
        message: "Invalid value: \"object\": no such key: optional evaluating rule: self.optional == 'x'",
      },
    ]);
  });

  test("rules do not run on null values", () => {
    const schema = specSchema({
      type: "object",
      properties: {
        n: { type: "string", nullable: true, "x-kubernetes-validations": [{ rule: "self != ''" }] },
      },
    });
    expect(compiled(crdWith(schema)).validate(thing({ n: null }))).toEqual([]);
  });

  test("a root rule sees apiVersion, kind and the metadata name", () => {
    const schema = {
      type: "object",
      properties: { spec: SPEC },
      "x-kubernetes-validations": [
        { rule: "self.kind == 'Thing' && self.metadata.name.startsWith('t') && self.spec.count == 3" },
      ],
    };
    expect(compiled(crdWith(schema)).validate(thing(VALUE))).toEqual([]);
    const bad = compileCrd(
      crdWith({ ...schema, "x-kubernetes-validations": [{ rule: "has(self.metadata.labels)" }] }),
    ).causes;
    expect(bad.map((c) => c.message)).toEqual([expect.stringContaining("undefined field 'labels'")]);
  });
});

describe("transition rules", () => {
  const immutable = [{ rule: "self == oldSelf", message: "is immutable" }];

  test("run only on update, comparing maps and lists deeply", () => {
    const schema = specSchema({
      type: "object",
      properties: {
        labels: {
          type: "object",
          additionalProperties: { type: "string" },
          "x-kubernetes-validations": immutable,
        },
        tags: { type: "array", items: { type: "string" }, "x-kubernetes-validations": immutable },
      },
    });
    const version = compiled(crdWith(schema));
    const value = { labels: { a: "1", b: "2" }, tags: ["x", "y"] };
    expect(version.validate(thing(value))).toEqual([]);
    expect(version.validate(thing(value), thing({ tags: ["x", "y"], labels: { b: "2", a: "1" } }))).toEqual(
      [],
    );
    expect(version.validate(thing(value), thing({ labels: { a: "1" }, tags: ["y", "x"] }))).toEqual([
      { reason: "FieldValueInvalid", field: "spec.labels", message: "Invalid value: is immutable" },
      { reason: "FieldValueInvalid", field: "spec.tags", message: "Invalid value: is immutable" },
    ]);
    // A field that did not exist before has no old value: the rule does not run.
    expect(version.validate(thing(value), thing({}))).toEqual([]);
  });

  test("correlate list-map items by their keys", () => {
    const schema = specSchema({
      type: "object",
      properties: {
        ports: {
          type: "array",
          "x-kubernetes-list-type": "map",
          "x-kubernetes-list-map-keys": ["name"],
          items: {
            type: "object",
            required: ["name"],
            properties: {
              name: { type: "string" },
              port: {
                type: "integer",
                "x-kubernetes-validations": [{ rule: "self >= oldSelf", message: "may not shrink" }],
              },
            },
          },
        },
      },
    });
    const version = compiled(crdWith(schema));
    const old = thing({
      ports: [
        { name: "a", port: 10 },
        { name: "b", port: 20 },
      ],
    });
    const reordered = thing({
      ports: [
        { name: "c", port: 1 },
        { name: "b", port: 20 },
        { name: "a", port: 11 },
      ],
    });
    expect(version.validate(reordered, old)).toEqual([]);
    expect(version.validate(thing({ ports: [{ name: "b", port: 19 }] }), old)).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.ports[0].port",
        message: "Invalid value: 19: may not shrink",
      },
    ]);
  });

  test("optionalOldSelf binds oldSelf as an optional, also on create", () => {
    const rule = {
      rule: "!oldSelf.hasValue() || self >= oldSelf.value()",
      message: "may only grow",
      optionalOldSelf: true,
    };
    const schema = specSchema({
      type: "object",
      properties: {
        size: {
          type: "integer",
          "x-kubernetes-validations": [rule, { rule: "self <= oldSelf.orValue(10)", optionalOldSelf: true }],
        },
      },
    });
    const version = compiled(crdWith(schema));
    expect(version.validate(thing({ size: 5 }))).toEqual([]);
    expect(version.validate(thing({ size: 11 }))).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.size",
        message: "Invalid value: 11: failed rule: self <= oldSelf.orValue(10)",
      },
    ]);
    expect(version.validate(thing({ size: 4 }), thing({ size: 5 }))).toEqual([
      { reason: "FieldValueInvalid", field: "spec.size", message: "Invalid value: 4: may only grow" },
    ]);
  });
});

describe("rules that do not compile refuse the CRD", () => {
  test("an undefined field, named with the rule and the position", () => {
    expect(refusal({ rule: "self.missing == 1" })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: `${RULE_PATH}.rule`,
        message:
          'Invalid value: apiextensions.ValidationRule{Rule:"self.missing == 1", Message:"", MessageExpression:"", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:"", OptionalOldSelf:(*bool)(nil)}: ' +
          "compilation failed: ERROR: <input>:1:5: undefined field 'missing'\n | self.missing == 1\n | ....^",
      },
    ]);
  });

  test.each([
    ["self.count == 'three'", "found no matching overload for '_==_' applied to '(int, string)'"],
    ["self.count == 3.0", "found no matching overload for '_==_' applied to '(int, double)'"],
    ["self.name.startsWith(1)", "found no matching overload for 'startsWith' applied to 'string.(int)'"],
    ["foo(self)", "undeclared reference to 'foo' (in container '')"],
    ["other.x == 1", "undeclared reference to 'other' (in container '')"],
    ["self.count.x == 1", "type 'int' does not support field selection"],
    ["self.count >", "Syntax error"],
  ])("%s: %s", (rule, error) => {
    const causes = refusal({ rule });
    expect(causes).toHaveLength(1);
    expect(causes[0]?.field).toBe(`${RULE_PATH}.rule`);
    expect(causes[0]?.message).toContain(`compilation failed: ERROR: <input>:`);
    expect(causes[0]?.message).toContain(error);
  });

  test("a rule must evaluate to a bool, a messageExpression to a string", () => {
    const rule = refusal({ rule: "self.count + 1" });
    expect(rule.map((c) => [c.field, c.message.split(": ").at(-1)])).toEqual([
      [`${RULE_PATH}.rule`, "cel expression must evaluate to a bool"],
    ]);
    const message = refusal({ rule: "true", messageExpression: "self.count" });
    expect(message.map((c) => [c.field, c.message.split(": ").at(-1)])).toEqual([
      [`${RULE_PATH}.messageExpression`, "must evaluate to a string"],
    ]);
  });

  test("oldSelf may not be used where old values cannot be correlated", () => {
    const schema = {
      type: "object",
      properties: {
        tags: {
          type: "array",
          items: { type: "string", "x-kubernetes-validations": [{ rule: "self == oldSelf" }] },
        },
      },
    };
    const tags = "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[tags]";
    expect(compileCrd(crdWith(specSchema(schema))).causes).toEqual([
      {
        reason: "FieldValueInvalid",
        field: `${tags}.items.x-kubernetes-validations[0].rule`,
        message: `Invalid value: "self == oldSelf": oldSelf cannot be used on the uncorrelatable portion of the schema within ${tags}`,
      },
    ]);
  });

  test("optionalOldSelf needs oldSelf, and fieldPath a declared field", () => {
    expect(refusal({ rule: "self.count > 0", optionalOldSelf: true })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: `${RULE_PATH}.optionalOldSelf`,
        message: "Invalid value: true: may not be set if oldSelf is not used in rule",
      },
    ]);
    expect(refusal({ rule: "self.count > 0", fieldPath: ".nope" })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: `${RULE_PATH}.fieldPath`,
        message: 'Invalid value: ".nope": fieldPath must be a valid path',
      },
    ]);
  });

  test("malformed entries are refused before compiling", () => {
    expect(refusal({ rule: " ", reason: "FieldValueBogus" })).toEqual([
      {
        reason: "FieldValueRequired",
        field: `${RULE_PATH}.rule`,
        message: "Required value: rule is not specified",
      },
      {
        reason: "FieldValueNotSupported",
        field: `${RULE_PATH}.reason`,
        message:
          'Unsupported value: "FieldValueBogus": supported values: "FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired"',
      },
    ]);
  });
});
