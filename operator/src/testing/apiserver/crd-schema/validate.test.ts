import { describe, expect, test } from "vitest";
import { compiled, crdWith, specSchema, thing } from "./fixtures.js";
import type { Json } from "./types.js";

type JsonObject = { [key: string]: Json };

/** The schema causes for `spec` under a spec schema; the CEL-blocking notice is left out. */
function check(schema: JsonObject, spec: Json) {
  const causes = compiled(crdWith(specSchema(schema))).validate(thing(spec));
  return causes.filter((cause) => cause.field !== "<nil>");
}

const field = (schema: JsonObject) => ({ type: "object", properties: { a: schema } });

describe("OpenAPI validation", () => {
  test("types, with whole numbers accepted as numbers", () => {
    expect(check(field({ type: "number" }), { a: 3 })).toEqual([]);
    expect(check(field({ type: "integer" }), { a: 1.5 })).toEqual([
      {
        reason: "FieldValueTypeInvalid",
        field: "spec.a",
        message: 'Invalid value: "number": spec.a in body must be of type integer: "number"',
      },
    ]);
    expect(check(field({ type: "array", items: { type: "string" } }), { a: { b: 1 } })).toEqual([
      {
        reason: "FieldValueTypeInvalid",
        field: "spec.a",
        message: 'Invalid value: "object": spec.a in body must be of type array: "object"',
      },
    ]);
  });

  test("null only where nullable, and a nullable enum must list null", () => {
    expect(check(field({ type: "string", nullable: true }), { a: null })).toEqual([]);
    expect(check(field({ type: "string" }), { a: null })).toEqual([
      {
        reason: "FieldValueTypeInvalid",
        field: "spec.a",
        message: 'Invalid value: "null": spec.a in body must be of type string: "null"',
      },
    ]);
    expect(check(field({ type: "string", nullable: true, enum: ["x"] }), { a: null })).toEqual([
      {
        reason: "FieldValueNotSupported",
        field: "spec.a",
        message: 'Unsupported value: null: supported values: "x"',
      },
    ]);
  });

  test("numeric bounds, worded as the server words them", () => {
    expect(check(field({ type: "integer", maximum: 10, exclusiveMaximum: true }), { a: 10 })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.a",
        message: "Invalid value: 10: spec.a in body should be less than 10",
      },
    ]);
    expect(check(field({ type: "integer", multipleOf: 5 }), { a: 12 })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.a",
        message: "Invalid value: 12: spec.a in body should be a multiple of 5",
      },
    ]);
    expect(check(field({ type: "number", minimum: 0.5 }), { a: 0.25 })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.a",
        message: "Invalid value: 0.25: spec.a in body should be greater than or equal to 0.5",
      },
    ]);
    expect(check(field({ type: "number", maximum: 1000000 }), { a: 2000000.5 })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.a",
        message: "Invalid value: 2.0000005e+06: spec.a in body should be less than or equal to 1e+06",
      },
    ]);
  });

  test("string lengths count characters, and patterns", () => {
    expect(check(field({ type: "string", maxLength: 2 }), { a: "éé" })).toEqual([]);
    expect(check(field({ type: "string", minLength: 3, pattern: "^[a-z]+$" }), { a: "A" })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.a",
        message: 'Invalid value: "A": spec.a in body should be at least 3 chars long',
      },
      {
        reason: "FieldValueInvalid",
        field: "spec.a",
        message: "Invalid value: \"A\": spec.a in body should match '^[a-z]+$'",
      },
    ]);
  });

  test.each([
    ["date-time", "2024-02-30T00:00:00Z", "2024-02-29T23:59:59.5+01:00"],
    ["date", "2024-13-01", "2024-12-31"],
    ["byte", "not base64!", "aGVsbG8="],
    ["hostname", "-bad-", "api.example.com"],
    ["uuid", "1234", "123e4567-e89b-12d3-a456-426614174000"],
    ["ipv4", "1.2.3", "10.0.0.1"],
    ["cidr", "10.0.0.0/33", "10.0.0.0/8"],
    ["duration", "soon", "1h30m"],
    ["uri", "example", "https://example.com/x"],
  ])("format %s refuses %j and accepts %j", (format, bad, good) => {
    expect(check(field({ type: "string", format }), { a: good })).toEqual([]);
    expect(check(field({ type: "string", format }), { a: bad })).toEqual([
      {
        reason: "FieldValueTypeInvalid",
        field: "spec.a",
        message: `Invalid value: ${JSON.stringify(bad)}: spec.a in body must be of type ${format}: ${JSON.stringify(bad)}`,
      },
    ]);
  });

  test("numeric formats and unknown formats are not checked", () => {
    expect(check(field({ type: "integer", format: "int32" }), { a: 2 ** 40 })).toEqual([]);
    expect(check(field({ type: "string", format: "k8s-unheard-of" }), { a: "anything" })).toEqual([]);
  });

  test("list and object sizes", () => {
    expect(check(field({ type: "array", minItems: 1, items: { type: "string" } }), { a: [] })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.a",
        message: "Invalid value: 0: spec.a in body should have at least 1 items",
      },
    ]);
    const map = {
      type: "object",
      minProperties: 2,
      maxProperties: 1,
      additionalProperties: { type: "string" },
    };
    expect(check(field(map), { a: { x: "1" } })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.a",
        message: "Invalid value: 1: spec.a in body should have at least 2 properties",
      },
    ]);
    expect(check(field({ ...map, minProperties: 0 }), { a: { x: "1", y: "2" } })).toEqual([
      { reason: "FieldValueTooMany", field: "spec.a", message: "Too many: 2: must have at most 1 item" },
    ]);
  });

  test("additionalProperties false forbids undeclared keys; a schema validates each value", () => {
    expect(check(field({ type: "object", additionalProperties: false }), { a: { x: 1 } })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.a",
        message: 'Invalid value: "x": spec.a.x in body is a forbidden property',
      },
    ]);
    expect(
      check(field({ type: "object", additionalProperties: { type: "integer" } }), { a: { "x.y": "1" } }),
    ).toEqual([
      {
        reason: "FieldValueTypeInvalid",
        field: "spec.a[x.y]",
        message: 'Invalid value: "string": spec.a[x.y] in body must be of type integer: "string"',
      },
    ]);
  });

  test("int-or-string", () => {
    const schema = field({ "x-kubernetes-int-or-string": true, pattern: "^[0-9]+%$" });
    expect(check(schema, { a: 80 })).toEqual([]);
    expect(check(schema, { a: "50%" })).toEqual([]);
    expect(check(schema, { a: true })).toEqual([
      {
        reason: "FieldValueTypeInvalid",
        field: "spec.a",
        message: 'Invalid value: "boolean": spec.a in body must be of type integer,string: "boolean"',
      },
    ]);
  });

  test("allOf, anyOf, oneOf and not", () => {
    const schema = {
      type: "object",
      properties: { a: { type: "string" }, b: { type: "string" } },
      oneOf: [{ required: ["a"] }, { required: ["b"] }],
      not: { required: ["a", "b"] },
    };
    expect(check(schema, { a: "1" })).toEqual([]);
    expect(check(schema, {})).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "",
        message: 'Invalid value: "": spec must validate one and only one schema (oneOf)',
      },
      { reason: "FieldValueRequired", field: "spec.a", message: "Required value" },
    ]);
    expect(check(schema, { a: "1", b: "2" })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "",
        message: 'Invalid value: "": spec must validate one and only one schema (oneOf)',
      },
      {
        reason: "FieldValueInvalid",
        field: "",
        message: 'Invalid value: "": spec must not validate the schema (not)',
      },
    ]);
    const anyOf = field({ type: "string", anyOf: [{ maxLength: 1 }, { pattern: "^x" }] });
    expect(check(anyOf, { a: "xyz" })).toEqual([]);
    expect(check(anyOf, { a: "abc" }).map((c) => c.message)).toEqual([
      'Invalid value: "": spec.a must validate at least one schema (anyOf)',
      "Too long: may not be more than 1 byte",
    ]);
  });

  test("list-type set items are unique", () => {
    const schema = field({ type: "array", "x-kubernetes-list-type": "set", items: { type: "string" } });
    expect(check(schema, { a: ["x", "y", "x", "x"] })).toEqual([
      { reason: "FieldValueDuplicate", field: "spec.a[2]", message: 'Duplicate value: "x"' },
    ]);
  });

  test("embedded resources need apiVersion and kind", () => {
    const schema = field({
      type: "object",
      "x-kubernetes-embedded-resource": true,
      "x-kubernetes-preserve-unknown-fields": true,
    });
    expect(check(schema, { a: { apiVersion: "v1", kind: "Pod", spec: {} } })).toEqual([]);
    expect(check(schema, { a: { apiVersion: "", spec: {} } })).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.a.apiVersion",
        message: 'Invalid value: "": must not be empty',
      },
      { reason: "FieldValueRequired", field: "spec.a.kind", message: "Required value: must not be empty" },
    ]);
  });

  test("the root schema may restrict metadata.name", () => {
    const schema = {
      type: "object",
      properties: { metadata: { type: "object", properties: { name: { type: "string", maxLength: 1 } } } },
    };
    const version = compiled(crdWith(schema));
    expect(version.validate(thing({}))).toEqual([
      {
        reason: "FieldValueTooLong",
        field: "metadata.name",
        message: "Too long: may not be more than 1 byte",
      },
      expect.objectContaining({ field: "<nil>" }),
    ]);
  });
});
