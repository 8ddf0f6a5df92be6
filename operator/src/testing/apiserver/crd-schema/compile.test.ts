import { describe, expect, test } from "vitest";
import { crdWith, specSchema, widgetCrd } from "./fixtures.js";
import { compileCrd } from "./index.js";
import type { FieldCause, Json } from "./types.js";

type JsonObject = { [key: string]: Json };

const ROOT = "spec.versions[0].schema.openAPIV3Schema";
const SPEC = `${ROOT}.properties[spec]`;

function causesOf(crd: JsonObject): FieldCause[] {
  const { versions, causes } = compileCrd(crd);
  if (causes.length > 0) expect(versions).toEqual([]);
  return causes;
}

/** The causes for a CRD whose root schema is `schema`. */
function schemaCauses(schema: JsonObject): FieldCause[] {
  return causesOf(crdWith(schema));
}

function edit(crd: JsonObject, change: (spec: JsonObject) => void): JsonObject {
  change(crd.spec as JsonObject);
  return crd;
}

describe("the CRD itself", () => {
  test("its name must be <plural>.<group>, with a dotted group", () => {
    const crd = edit(widgetCrd(), (spec) => {
      spec.group = "example";
    });
    expect(causesOf(crd)).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "metadata.name",
        message: 'Invalid value: "widgets.example.com": must be spec.names.plural+"."+spec.group',
      },
      {
        reason: "FieldValueInvalid",
        field: "spec.group",
        message: 'Invalid value: "example": should be a domain with at least one dot',
      },
    ]);
  });

  test("names, scope and versions are checked; listKind defaults to <Kind>List", () => {
    const crd = edit(widgetCrd(), (spec) => {
      spec.names = { plural: "Widgets", kind: "Widget", shortNames: ["w_d"] };
      spec.scope = "Global";
      const [version] = spec.versions as JsonObject[];
      spec.versions = [version as JsonObject, { ...version, name: "v2", storage: true }];
    });
    expect(causesOf(crd).map(({ field, reason }) => [field, reason])).toEqual([
      ["metadata.name", "FieldValueInvalid"],
      ["spec.names.plural", "FieldValueInvalid"],
      ["spec.names.shortNames[0]", "FieldValueInvalid"],
      ["spec.scope", "FieldValueNotSupported"],
      ["spec.versions", "FieldValueInvalid"],
    ]);
    const storage = causesOf(crd).at(-1);
    expect(storage?.message).toMatch(
      /^Invalid value: \[\]apiextensions.CustomResourceDefinitionVersion\{.*\}: /,
    );
    expect(storage?.message).toMatch(/: must have exactly one version marked as storage version$/);
  });

  test("every version needs a schema; only served versions are compiled", () => {
    const crd = edit(widgetCrd(), (spec) => {
      const [version] = spec.versions as JsonObject[];
      spec.versions = [
        { ...version, name: "v1alpha1", storage: false, served: false },
        version as JsonObject,
      ];
    });
    const { versions, causes } = compileCrd(crd);
    expect(causes).toEqual([]);
    expect(versions.map((v) => v.version)).toEqual(["v1"]);
    const missing = edit(widgetCrd(), (spec) => {
      delete ((spec.versions as JsonObject[])[0] as JsonObject).schema;
    });
    expect(causesOf(missing)).toEqual([
      { reason: "FieldValueRequired", field: ROOT, message: "Required value: schemas are required" },
    ]);
  });

  test("printer columns and scale paths are checked", () => {
    const crd = edit(widgetCrd(), (spec) => {
      const [version] = spec.versions as JsonObject[];
      (version as JsonObject).additionalPrinterColumns = [
        { name: "Bad", type: "map", jsonPath: "spec.x" },
        { name: "Fmt", type: "string", format: "weird", jsonPath: ".spec[?(@ ~ 1)]" },
      ];
      (version as JsonObject).subresources = { scale: { specReplicasPath: ".status.replicas" } };
    });
    const at = "spec.versions[0]";
    expect(causesOf(crd)).toEqual([
      {
        reason: "FieldValueInvalid",
        field: `${at}.additionalPrinterColumns[0].type`,
        message: 'Invalid value: "map": must be one of boolean,date,integer,number,string',
      },
      {
        reason: "FieldValueInvalid",
        field: `${at}.additionalPrinterColumns[0].JSONPath`,
        message: 'Invalid value: "spec.x": must be a simple json path starting with .',
      },
      {
        reason: "FieldValueInvalid",
        field: `${at}.additionalPrinterColumns[1].format`,
        message:
          'Invalid value: "weird": must be one of byte,date,date-time,double,float,int32,int64,password',
      },
      {
        reason: "FieldValueInvalid",
        field: `${at}.additionalPrinterColumns[1].JSONPath`,
        message: expect.stringMatching(/^Invalid value: ".spec\[\?\(@ ~ 1\)\]": must be a valid JSON path: /),
      },
      {
        reason: "FieldValueRequired",
        field: `${at}.subresources.scale.statusReplicasPath`,
        message: "Required value",
      },
      {
        reason: "FieldValueInvalid",
        field: `${at}.subresources.scale.specReplicasPath`,
        message: 'Invalid value: ".status.replicas": should be a json path under .spec',
      },
    ]);
  });
});

describe("non-structural schemas are refused", () => {
  test("every node needs a type", () => {
    expect(
      schemaCauses({ type: "object", properties: { spec: { properties: { a: { type: "string" } } } } }),
    ).toEqual([
      {
        reason: "FieldValueRequired",
        field: `${SPEC}.type`,
        message: "Required value: must not be empty for specified object fields",
      },
    ]);
    expect(schemaCauses(specSchema({ type: "array", items: { properties: {} } }))).toEqual([
      {
        reason: "FieldValueRequired",
        field: `${SPEC}.items.type`,
        message: "Required value: must not be empty for specified array items",
      },
    ]);
    expect(schemaCauses(specSchema({ type: "array" }))).toEqual([
      { reason: "FieldValueRequired", field: `${SPEC}.items`, message: "Required value: must be specified" },
    ]);
  });

  test("int-or-string and preserve-unknown-fields nodes may leave the type out", () => {
    const schema = specSchema({
      type: "object",
      properties: {
        port: { "x-kubernetes-int-or-string": true, anyOf: [{ type: "integer" }, { type: "string" }] },
        raw: { "x-kubernetes-preserve-unknown-fields": true },
      },
    });
    expect(schemaCauses(schema)).toEqual([]);
  });

  test("properties and additionalProperties are exclusive; the root is an object without additionalProperties", () => {
    const schema = {
      type: "object",
      additionalProperties: { type: "string" },
      properties: {
        spec: { type: "object", properties: { a: { type: "string" } }, additionalProperties: false },
      },
    };
    expect(schemaCauses(schema)).toEqual([
      {
        reason: "FieldValueForbidden",
        field: `${ROOT}.additionalProperties`,
        message: "Forbidden: must not be used at the root",
      },
      {
        reason: "FieldValueForbidden",
        field: `${ROOT}.additionalProperties`,
        message: "Forbidden: additionalProperties and properties are mutual exclusive",
      },
      {
        reason: "FieldValueForbidden",
        field: `${SPEC}.additionalProperties`,
        message: "Forbidden: additionalProperties and properties are mutual exclusive",
      },
    ]);
    expect(schemaCauses({ type: "string" })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: `${ROOT}.type`,
        message: 'Invalid value: "string": must be object at the root',
      },
    ]);
  });

  test("value validations may not declare types or fields the schema does not", () => {
    const schema = specSchema({
      type: "object",
      properties: { a: { type: "string" } },
      anyOf: [{ type: "object", properties: { b: { minLength: 1 } } }, { required: ["a"] }],
    });
    expect(schemaCauses(schema)).toEqual([
      {
        reason: "FieldValueForbidden",
        field: `${SPEC}.anyOf[0].type`,
        message: "Forbidden: must be empty to be structural",
      },
      {
        reason: "FieldValueRequired",
        field: `${SPEC}.properties[b]`,
        message: `Required value: because it is defined in ${SPEC}.anyOf[0].properties[b]`,
      },
    ]);
  });

  test("metadata at the root may only restrict name and generateName, without defaults", () => {
    const ok = {
      type: "object",
      properties: { metadata: { type: "object", properties: { name: { type: "string", maxLength: 20 } } } },
    };
    expect(schemaCauses(ok)).toEqual([]);
    const bad = {
      type: "object",
      properties: {
        metadata: { type: "object", properties: { labels: { type: "object", default: {} } } },
        kind: { type: "integer" },
      },
    };
    expect(schemaCauses(bad)).toEqual([
      {
        reason: "FieldValueInvalid",
        field: `${ROOT}.properties[kind].type`,
        message: 'Invalid value: "integer": must be string',
      },
      {
        reason: "FieldValueForbidden",
        field: `${ROOT}.properties[metadata]`,
        message:
          "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified",
      },
      {
        reason: "FieldValueForbidden",
        field: `${ROOT}.properties[metadata].properties[labels].default`,
        message: "Forbidden: must not be set in top-level metadata",
      },
    ]);
  });

  test("Kubernetes extensions must be used consistently", () => {
    const schema = specSchema({
      type: "object",
      "x-kubernetes-list-type": "set",
      properties: {
        tags: { type: "array", uniqueItems: true, items: { type: "string" } },
        ports: {
          type: "array",
          "x-kubernetes-list-type": "map",
          "x-kubernetes-list-map-keys": ["name", "missing"],
          items: { type: "object", properties: { name: { type: "string", nullable: true } } },
        },
        free: { type: "object", "x-kubernetes-preserve-unknown-fields": false },
      },
    });
    expect(schemaCauses(schema)).toEqual([
      {
        reason: "FieldValueInvalid",
        field: `${SPEC}.type`,
        message: 'Invalid value: "object": must be array if x-kubernetes-list-type is specified',
      },
      {
        reason: "FieldValueForbidden",
        field: `${SPEC}.properties[tags].uniqueItems`,
        message:
          "Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
      },
      {
        reason: "FieldValueRequired",
        field: `${SPEC}.properties[ports].items.properties[name].default`,
        message:
          "Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
      },
      {
        reason: "FieldValueForbidden",
        field: `${SPEC}.properties[ports].items.properties[name].nullable`,
        message: "Forbidden: this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
      },
      {
        reason: "FieldValueInvalid",
        field: `${SPEC}.properties[ports].x-kubernetes-list-map-keys`,
        message:
          'Invalid value: []interface {}{"name", "missing"}: entries must all be names of item properties',
      },
      {
        reason: "FieldValueInvalid",
        field: `${SPEC}.properties[free].x-kubernetes-preserve-unknown-fields`,
        message: "Invalid value: false: must be true or undefined",
      },
    ]);
  });

  test("unsupported OpenAPI keywords and types", () => {
    const schema = specSchema({
      type: "object",
      properties: { a: { type: "null" }, b: { $ref: "#/x", type: "string" } },
    });
    expect(schemaCauses(schema)).toEqual([
      {
        reason: "FieldValueNotSupported",
        field: `${SPEC}.properties[a].type`,
        message:
          'Unsupported value: "null": supported values: "array", "boolean", "integer", "number", "object", "string"',
      },
      {
        reason: "FieldValueForbidden",
        field: `${SPEC}.properties[a].type`,
        message: "Forbidden: type cannot be set to null, use nullable as an alternative",
      },
      {
        reason: "FieldValueForbidden",
        field: `${SPEC}.properties[b].$ref`,
        message: "Forbidden: $ref is not supported",
      },
    ]);
  });
});

describe("defaults must be valid", () => {
  test("against their own schema, pruned", () => {
    const schema = specSchema({
      type: "object",
      properties: {
        replicas: { type: "integer", minimum: 1, default: 0 },
        mode: { type: "string", enum: ["a", "b"], default: "c" },
        config: { type: "object", properties: { x: { type: "string" } }, default: { x: "1", y: "2" } },
      },
    });
    const at = `${SPEC}.properties`;
    expect(schemaCauses(schema)).toEqual([
      {
        reason: "FieldValueInvalid",
        field: `${at}[replicas].default`,
        message: "Invalid value: 0:  in body should be greater than or equal to 1",
      },
      {
        reason: "FieldValueNotSupported",
        field: `${at}[mode].default`,
        message: 'Unsupported value: "c": supported values: "a", "b"',
      },
      {
        reason: "FieldValueInvalid",
        field: `${at}[config].default`,
        message: 'Invalid value: map[string]interface {}{"x":"1", "y":"2"}: must not have unknown fields',
      },
    ]);
  });

  test("against the node's rules", () => {
    const schema = specSchema({
      type: "object",
      properties: {
        size: { type: "integer", default: 3, "x-kubernetes-validations": [{ rule: "self % 2 == 0" }] },
        // Run as an update from the default to itself, a transition rule holds.
        name: { type: "string", default: "x", "x-kubernetes-validations": [{ rule: "self == oldSelf" }] },
        // An object default's absent fields are not defaulted first: the rule must allow for them.
        limits: {
          type: "object",
          default: {},
          properties: { cpu: { type: "integer", default: 1 } },
          "x-kubernetes-validations": [{ rule: "self.cpu > 0" }],
        },
      },
    });
    expect(schemaCauses(schema)).toEqual([
      {
        reason: "FieldValueInvalid",
        field: `${SPEC}.properties[size].default`,
        message: "Invalid value: 3: failed rule: self % 2 == 0",
      },
      {
        reason: "FieldValueInvalid",
        field: `${SPEC}.properties[limits].default`,
        message: 'Invalid value: "object": no such key: cpu evaluating rule: self.cpu > 0',
      },
    ]);
  });
});
