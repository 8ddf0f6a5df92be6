import { describe, expect, test } from "vitest";
import { compiled, crdWith, specSchema, thing } from "./fixtures.js";
import type { Json } from "./types.js";

type JsonObject = { [key: string]: Json };

function pruned(schema: JsonObject, spec: Json): Json {
  const object = thing(spec);
  compiled(crdWith(specSchema(schema))).prune(object);
  return object.spec ?? "absent";
}

function defaulted(schema: JsonObject, spec: Json): Json {
  const object = thing(spec);
  compiled(crdWith(specSchema(schema))).applyDefaults(object);
  return object.spec ?? "absent";
}

describe("pruning", () => {
  test("drops undeclared fields recursively, in objects and list items, and keeps root meta", () => {
    const schema = {
      type: "object",
      properties: {
        a: { type: "string" },
        items: { type: "array", items: { type: "object", properties: { x: { type: "integer" } } } },
      },
    };
    const object = { ...thing({ a: "1", b: 2, items: [{ x: 1, y: 2 }, { z: 3 }] }), status: { gone: true } };
    compiled(crdWith(specSchema(schema))).prune(object);
    expect(object).toEqual({
      apiVersion: "example.com/v1",
      kind: "Thing",
      metadata: { name: "t1", namespace: "default" },
      spec: { a: "1", items: [{ x: 1 }, {}] },
    });
  });

  test("x-kubernetes-preserve-unknown-fields keeps unknown fields but prunes declared ones", () => {
    const schema = {
      type: "object",
      "x-kubernetes-preserve-unknown-fields": true,
      properties: { known: { type: "object", properties: { x: { type: "string" } } } },
    };
    expect(pruned(schema, { anything: { deep: 1 }, known: { x: "1", y: "2" } })).toEqual({
      anything: { deep: 1 },
      known: { x: "1" },
    });
  });

  test("map values are pruned by the additionalProperties schema; `true` keeps scalars only", () => {
    const schema = {
      type: "object",
      properties: {
        typed: {
          type: "object",
          additionalProperties: { type: "object", properties: { x: { type: "string" } } },
        },
        loose: { type: "object", additionalProperties: true },
      },
    };
    expect(pruned(schema, { typed: { k: { x: "1", y: "2" } }, loose: { s: "1", o: { deep: 1 } } })).toEqual({
      typed: { k: { x: "1" } },
      loose: { s: "1", o: {} },
    });
  });

  test("embedded resources keep apiVersion, kind and metadata", () => {
    const schema = {
      type: "object",
      properties: {
        template: {
          type: "object",
          "x-kubernetes-embedded-resource": true,
          properties: { spec: { type: "object", properties: { x: { type: "string" } } } },
        },
      },
    };
    const template = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { labels: { a: "b" } },
      spec: { x: "1", y: "2" },
      extra: 1,
    };
    expect(pruned(schema, { template })).toEqual({
      template: { apiVersion: "v1", kind: "Pod", metadata: { labels: { a: "b" } }, spec: { x: "1" } },
    });
  });

  test("drops nulls that are neither nullable nor defaulted", () => {
    const schema = {
      type: "object",
      properties: {
        plain: { type: "string" },
        nullable: { type: "string", nullable: true },
        defaulted: { type: "string", default: "d" },
      },
    };
    expect(pruned(schema, { plain: null, nullable: null, defaulted: null })).toEqual({
      nullable: null,
      defaulted: null,
    });
  });
});

describe("defaulting", () => {
  const schema = {
    type: "object",
    properties: {
      replicas: { type: "integer", default: 1 },
      mode: { type: "string", nullable: true, default: "auto" },
      strict: { type: "string", default: "on" },
      limits: { type: "object", properties: { cpu: { type: "string", default: "1" } } },
      options: { type: "object", default: {}, properties: { retries: { type: "integer", default: 3 } } },
      ports: {
        type: "array",
        items: { type: "object", properties: { protocol: { type: "string", default: "TCP" } } },
      },
      env: { type: "object", additionalProperties: { type: "string", default: "unset" } },
    },
  };

  test("fills absent fields, recursing into present and defaulted objects only", () => {
    expect(defaulted(schema, {})).toEqual({
      replicas: 1,
      mode: "auto",
      strict: "on",
      options: { retries: 3 },
    });
    expect(defaulted(schema, { limits: {}, ports: [{}, { protocol: "UDP" }], replicas: 0 })).toEqual({
      replicas: 0,
      mode: "auto",
      strict: "on",
      limits: { cpu: "1" },
      options: { retries: 3 },
      ports: [{ protocol: "TCP" }, { protocol: "UDP" }],
    });
  });

  test("replaces nulls that are not nullable, including map values; keeps nullable nulls", () => {
    expect(defaulted(schema, { mode: null, strict: null, env: { A: null, B: "b" } })).toEqual({
      replicas: 1,
      mode: null,
      strict: "on",
      options: { retries: 3 },
      env: { A: "unset", B: "b" },
    });
  });

  test("copies defaults, so objects never share them", () => {
    const version = compiled(crdWith(specSchema(schema)));
    const first = thing({});
    const second = thing({});
    version.applyDefaults(first);
    version.applyDefaults(second);
    ((first.spec as JsonObject).options as JsonObject).retries = 9;
    expect((second.spec as JsonObject).options).toEqual({ retries: 3 });
  });

  test("the spec itself is defaulted from the root", () => {
    const root = {
      type: "object",
      properties: {
        spec: { type: "object", default: {}, properties: { a: { type: "integer", default: 5 } } },
      },
    };
    const object: JsonObject = { apiVersion: "example.com/v1", kind: "Thing", metadata: { name: "t" } };
    compiled(crdWith(root)).applyDefaults(object);
    expect(object.spec).toEqual({ a: 5 });
  });
});
