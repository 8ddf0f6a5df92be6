import { describe, expect, test } from "vitest";
import { compiled, crdWith, specSchema, thing } from "./fixtures.js";
import { evaluateJsonPath, parseJsonPath } from "./json-path.js";
import type { Json } from "./types.js";

const DOC: Json = {
  metadata: { name: "x", labels: { "app.kubernetes.io/name": "web" } },
  status: {
    conditions: [
      { type: "Synced", status: "False", count: 1 },
      { type: "Ready", status: "True", count: 5 },
    ],
  },
};

describe("printer column JSONPath", () => {
  test.each([
    [".metadata.name", ["x"]],
    ["{.metadata.name}", ["x"]],
    [".metadata.labels['app.kubernetes.io/name']", ["web"]],
    [".status.conditions[0].type", ["Synced"]],
    [".status.conditions[-1].type", ["Ready"]],
    [".status.conditions[*].type", ["Synced", "Ready"]],
    ['.status.conditions[?(@.type=="Ready")].status', ["True"]],
    [".status.conditions[?(@.type != 'Ready')].status", ["False"]],
    [".status.conditions[?(@.count > 2)].type", ["Ready"]],
    [".status.conditions[?(@.count)].type", ["Synced", "Ready"]],
    [".status.missing.deeper", []],
  ])("%s selects %j", (path, expected) => {
    expect(evaluateJsonPath(parseJsonPath(path), DOC)).toEqual(expected);
  });

  test("refuses what it cannot read", () => {
    expect(() => parseJsonPath(".a[?(@.b ~ 1)]")).toThrow();
    expect(() => parseJsonPath(".a..b")).toThrow();
  });
});

describe("Table cells", () => {
  const columns = [
    { name: "Int", type: "integer", jsonPath: ".spec.n" },
    { name: "Num", type: "number", jsonPath: ".spec.n" },
    { name: "Bool", type: "boolean", jsonPath: ".spec.n" },
    { name: "Str", type: "string", jsonPath: ".spec.n" },
    { name: "Obj", type: "string", jsonPath: ".spec.o" },
    { name: "When", type: "date", jsonPath: ".spec.when" },
  ];
  const schema = specSchema({ type: "object", "x-kubernetes-preserve-unknown-fields": true });
  const version = compiled(crdWith(schema, { additionalPrinterColumns: columns }));

  test("type the first selected value per column", () => {
    const object = thing({ n: 2.7, o: { b: [1, "x"], a: true }, when: "2024-05-01T12:00:00.123+02:00" });
    expect(version.cells(object)).toEqual([
      2,
      2.7,
      null,
      "2.7",
      '{"a":true,"b":[1,"x"]}',
      "2024-05-01T10:00:00Z",
    ]);
  });

  test("are null where the path selects nothing, and dates that do not parse are <invalid>", () => {
    expect(version.cells(thing({ when: "later" }))).toEqual([null, null, null, null, null, "<invalid>"]);
  });
});
