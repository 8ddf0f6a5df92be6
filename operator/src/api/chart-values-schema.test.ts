import { describe, expect, it } from "vitest";
import {
  crdField,
  formatJson,
  helmSchema,
  renderValuesSchema,
  VALUES_SCHEMA_BASE,
  VALUES_SCHEMA_NOTICE,
} from "./chart-values-schema.js";
import { type JSONSchemaProps, type Json, s } from "./schema.js";
import { coordinatorCrd } from "./v1alpha1/crds.js";

/** The keywords values.schema.json may hold for a CRD field: JSON Schema draft-07's, as Helm reads them. */
const JSON_SCHEMA_KEYWORDS = new Set([
  "description",
  "type",
  "enum",
  "pattern",
  "minimum",
  "maximum",
  "minLength",
  "maxLength",
  "minItems",
  "maxItems",
  "uniqueItems",
  "items",
  "properties",
  "additionalProperties",
  "required",
]);

function* nodes(node: Json, path: string): Generator<[string, { [key: string]: Json }]> {
  if (typeof node !== "object" || node === null || Array.isArray(node)) return;
  yield [path, node];
  for (const [key, child] of Object.entries((node.properties ?? {}) as Record<string, Json>)) {
    yield* nodes(child, `${path}.${key}`);
  }
  if (node.items) yield* nodes(node.items, `${path}[]`);
  if (typeof node.additionalProperties === "object") yield* nodes(node.additionalProperties, `${path}{}`);
}

describe("helmSchema", () => {
  it("keeps descriptions and assertions, closes objects, drops defaults, formats and CEL rules", () => {
    const node = s.object(
      {
        name: s.string({ description: "n", pattern: "^a+$", minLength: 1, maxLength: 9, default: "a" }),
        count: s.integer({ description: "c", minimum: 0, maximum: 5, format: "int32" }),
        mode: s.enum(["A", "B"], { description: "m", default: "A" }),
        on: s.boolean({ description: "o", rules: [{ rule: "self", message: "must be on" }] }),
        keys: s.array(s.string({ description: "k" }), {
          description: "ks",
          minItems: 1,
          maxItems: 4,
          listType: "set",
        }),
      },
      { description: "root", required: ["name"], rules: [{ rule: "has(self.name)" }] },
    ).node;
    expect(helmSchema(node)).toEqual({
      description: "root",
      type: "object",
      properties: {
        name: { description: "n", type: "string", pattern: "^a+$", minLength: 1, maxLength: 9 },
        count: { description: "c", type: "integer", minimum: 0, maximum: 5 },
        mode: { description: "m", type: "string", enum: ["A", "B"] },
        on: { description: "o", type: "boolean" },
        keys: {
          description: "ks",
          type: "array",
          minItems: 1,
          maxItems: 4,
          uniqueItems: true,
          items: { description: "k", type: "string" },
        },
      },
      additionalProperties: false,
      required: ["name"],
    });
  });

  it("writes int-or-string, preserved objects, maps, list-maps and nullable as JSON Schema says them", () => {
    expect(helmSchema(s.intOrString({ description: "q", pattern: "^[0-9]+m$" }).node)).toEqual({
      description: "q",
      type: ["integer", "string"],
      pattern: "^[0-9]+m$",
    });
    // The API server keeps an embedded type's unknown fields: Helm must not refuse them.
    expect(helmSchema(s.preserveUnknown({ description: "affinity" }).node)).toEqual({
      description: "affinity",
      type: "object",
    });
    expect(helmSchema(s.map(s.string({ description: "v" }), { description: "labels" }).node)).toEqual({
      description: "labels",
      type: "object",
      additionalProperties: { description: "v", type: "string" },
    });
    const entry = s.object(
      { name: s.string({ description: "n" }) },
      { description: "e", required: ["name"] },
    );
    expect(
      helmSchema(s.array(entry, { description: "list", listType: "map", listMapKeys: ["name"] }).node),
    ).toEqual({
      description: "list",
      type: "array",
      items: {
        description: "e",
        type: "object",
        properties: { name: { description: "n", type: "string" } },
        additionalProperties: false,
        required: ["name"],
      },
    });
    const nullable: JSONSchemaProps = { description: "x", type: "string", enum: ["a"], nullable: true };
    expect(helmSchema(nullable)).toEqual({ description: "x", type: ["string", "null"], enum: ["a", null] });
  });

  it("leaves nothing of the Coordinator's spec.config that is not JSON Schema, every object closed", () => {
    const config = helmSchema(crdField("Coordinator.spec.config"));
    const all = [...nodes(config, "config")];
    expect(all.length).toBeGreaterThan(30);
    for (const [path, node] of all) {
      expect(
        Object.keys(node).filter((key) => !JSON_SCHEMA_KEYWORDS.has(key)),
        path,
      ).toEqual([]);
      expect(node.description, `${path} has no description`).toMatch(/\S/);
      if (node.properties) expect(node.additionalProperties, `${path} is open`).toBe(false);
    }
  });
});

describe("crdField", () => {
  it("finds a field of a CRD by kind and path, and names what it cannot find", () => {
    const spec = coordinatorCrd().spec.versions[0]?.schema.openAPIV3Schema.properties?.spec;
    expect(crdField("Coordinator.spec.config")).toBe(spec?.properties?.config);
    expect(crdField("ProviderRelease.spec").type).toBe("object");
    expect(() => crdField("Provider.spec")).toThrow('"$generated": "Provider.spec": no CRD of kind Provider');
    expect(() => crdField("Coordinator.spec.confg.logLevel")).toThrow("Coordinator has no spec.confg");
  });
});

describe("renderValuesSchema", () => {
  const base = (config: Json) =>
    JSON.stringify({
      $schema: "http://json-schema.org/draft-07/schema#",
      $comment: "the skeleton",
      type: "object",
      properties: { coordinator: { type: "object", properties: { config } } },
    });

  it("fills each placeholder with the CRD field for Helm and marks the file generated", () => {
    const text = renderValuesSchema(base({ $generated: "Coordinator.spec.config" }));
    const schema = JSON.parse(text);
    expect(Object.keys(schema)).toEqual(["$schema", "$comment", "type", "properties"]);
    expect(schema.$comment).toBe(VALUES_SCHEMA_NOTICE);
    expect(schema.$comment).toContain("node operator/dist/api/write-crds.js");
    expect(schema.properties.coordinator.properties.config).toEqual(
      helmSchema(crdField("Coordinator.spec.config")),
    );
    expect(text).toBe(formatJson(schema));
  });

  it("refuses a placeholder with more than its reference, a reference to nothing, and bad JSON", () => {
    expect(() => renderValuesSchema(base({ $generated: "Coordinator.spec.config", type: "object" }))).toThrow(
      `${VALUES_SCHEMA_BASE}/properties/coordinator/properties/config: a placeholder is exactly`,
    );
    expect(() => renderValuesSchema(base({ $generated: "Coordinator.spec.nothing" }))).toThrow(
      "Coordinator has no spec.nothing",
    );
    expect(() => renderValuesSchema("{")).toThrow(`${VALUES_SCHEMA_BASE}: `);
    expect(() => renderValuesSchema("[]")).toThrow(`${VALUES_SCHEMA_BASE}: not a JSON object`);
  });
});

describe("formatJson", () => {
  it("writes what fits on one line, breaks the rest an entry a line, and fills number arrays", () => {
    expect(formatJson({ a: { b: [1, "x", null, true] }, c: {}, d: [] })).toBe(
      '{ "a": { "b": [1, "x", null, true] }, "c": {}, "d": [] }\n',
    );
    const long = "x".repeat(100);
    expect(formatJson({ a: { b: long, c: [long, 2] } })).toBe(
      `{\n  "a": {\n    "b": "${long}",\n    "c": [\n      "${long}",\n      2\n    ]\n  }\n}\n`,
    );
    const numbers = Array.from({ length: 40 }, (_, i) => i * 1000);
    const lines = formatJson({ n: numbers }).split("\n");
    expect(lines[2]).toBe(
      `    ${numbers
        .slice(0, 17)
        .map((n) => `${n},`)
        .join(" ")}`,
    );
    expect(formatJson([1e21, 1e-7])).toBe("[1e21, 1e-7]\n");
  });

  it("fits every line in Biome's width, counting the comma after a value", () => {
    // 110 characters with its comma: the first entry stays whole; one more and it breaks.
    const fits = { a: { b: "x".repeat(91) }, z: 0 };
    expect(formatJson(fits).split("\n")[1]).toHaveLength(110);
    const breaks = { a: { b: "x".repeat(92) }, z: 0 };
    expect(formatJson(breaks).split("\n")[1]).toBe('  "a": {');
    for (const value of [fits, breaks]) expect(JSON.parse(formatJson(value))).toEqual(value);
  });
});
