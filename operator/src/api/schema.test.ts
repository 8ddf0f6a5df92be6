import { describe, expect, expectTypeOf, it } from "vitest";
import { type Infer, s } from "./schema.js";

describe("schema builder", () => {
  it("writes each option as its JSONSchemaProps key, and leaves absent ones out", () => {
    expect(s.string({ description: "d" }).node).toEqual({ description: "d", type: "string" });
    expect(
      s.string({
        description: "d",
        pattern: "^a$",
        minLength: 1,
        maxLength: 3,
        default: "a",
        format: "date-time",
      }).node,
    ).toEqual({
      description: "d",
      type: "string",
      pattern: "^a$",
      minLength: 1,
      maxLength: 3,
      default: "a",
      format: "date-time",
    });
    expect(s.integer({ description: "n", minimum: 0, maximum: 9, format: "int32", default: 2 }).node).toEqual(
      {
        description: "n",
        type: "integer",
        minimum: 0,
        maximum: 9,
        format: "int32",
        default: 2,
      },
    );
    expect(s.boolean({ description: "b", default: false }).node).toEqual({
      description: "b",
      type: "boolean",
      default: false,
    });
    expect(s.enum(["A", "B"], { description: "e", default: "B" }).node).toEqual({
      description: "e",
      type: "string",
      enum: ["A", "B"],
      default: "B",
    });
  });

  it("writes CEL rules as x-kubernetes-validations", () => {
    const rules = [{ rule: "self != ''", message: "empty" }];
    expect(s.string({ description: "d", rules }).node["x-kubernetes-validations"]).toEqual(rules);
    expect(s.string({ description: "d", rules: [] }).node).not.toHaveProperty("x-kubernetes-validations");
  });

  it("builds the Kubernetes extensions: int-or-string, preserved objects, maps, list types", () => {
    expect(s.intOrString({ description: "q", pattern: "^[0-9]+m?$" }).node).toEqual({
      description: "q",
      "x-kubernetes-int-or-string": true,
      pattern: "^[0-9]+m?$",
    });
    expect(s.preserveUnknown<{ a: 1 }>({ description: "p" }).node).toEqual({
      description: "p",
      type: "object",
      "x-kubernetes-preserve-unknown-fields": true,
    });
    expect(s.map(s.string({ description: "v" }), { description: "m" }).node).toEqual({
      description: "m",
      type: "object",
      additionalProperties: { description: "v", type: "string" },
    });
    const item = s.object(
      { type: s.string({ description: "t" }), value: s.string({ description: "v" }) },
      { description: "i", required: ["type"] },
    );
    expect(
      s.array(item, { description: "l", maxItems: 4, listType: "map", listMapKeys: ["type"] }).node,
    ).toEqual({
      description: "l",
      type: "array",
      items: item.node,
      maxItems: 4,
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["type"],
    });
  });

  it("refuses a list-map key an item may lack, and an object default that would be invalid", () => {
    const item = s.object({ type: s.string({ description: "t" }) }, { description: "i" });
    expect(() => s.array(item, { description: "l", listType: "map", listMapKeys: ["type"] })).toThrow(
      /must be required or defaulted/,
    );
    expect(() =>
      s.object(
        { name: s.string({ description: "n" }) },
        { description: "o", required: ["name"], default: {} },
      ),
    ).toThrow(/default \{\} lacks the required name/);
    const defaulted = s.object(
      { name: s.string({ description: "n", default: "x" }) },
      { description: "o", required: ["name"], default: {} },
    );
    expect(defaulted.node).toMatchObject({ required: ["name"], default: {} });
  });

  it("infers the stored type: required and defaulted fields present, the others optional", () => {
    const schema = s.object(
      {
        name: s.string({ description: "n" }),
        replicas: s.integer({ description: "r", default: 1 }),
        note: s.string({ description: "x" }),
        policy: s.enum(["Always", "Never"], { description: "p" }),
        labels: s.map(s.string({ description: "v" }), { description: "l" }),
        ports: s.array(s.integer({ description: "p" }), { description: "ps" }),
        quantity: s.intOrString({ description: "q" }),
        nested: s.object(
          { on: s.boolean({ description: "o", default: true }) },
          { description: "n", default: {} },
        ),
      },
      { description: "root", required: ["name"] },
    );
    expectTypeOf<Infer<typeof schema>>().toEqualTypeOf<{
      name: string;
      replicas: number;
      nested: { on: boolean };
      note?: string;
      policy?: "Always" | "Never";
      labels?: Record<string, string>;
      ports?: number[];
      quantity?: number | string;
    }>();
    expect(schema.node.required).toEqual(["name"]);
  });
});
