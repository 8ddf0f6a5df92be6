import { describe, expect, it } from "vitest";
import { BodyError } from "../chat/generation-input.js";
import { FORMAT_RULES } from "./formats.js";
import {
  compileSchema,
  FORMAT_PATTERNS,
  formatGrammar,
  formatViolation,
  gbnfLiteral,
  integerRange,
  jsonObjectGrammar,
  readResponseFormat,
  SchemaError,
  schemaGrammar,
  schemaViolation,
} from "./index.js";

const person = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 8 },
    age: { type: "integer", minimum: 0, exclusiveMaximum: 151 },
    tags: { type: "array", items: { enum: ["a", "b"] }, minItems: 1, maxItems: 3 },
    nick: { type: ["string", "null"] },
  },
  required: ["name", "age", "tags", "nick"],
  additionalProperties: false,
};

function schemaError(schema: unknown, strict = false): SchemaError {
  try {
    compileSchema(schema, { strict });
  } catch (e) {
    if (e instanceof SchemaError) return e;
    throw e;
  }
  throw new Error("compiled");
}

function bodyError(body: Record<string, unknown>): BodyError {
  try {
    readResponseFormat(body);
  } catch (e) {
    if (e instanceof BodyError) return e;
    throw e;
  }
  throw new Error("accepted");
}

describe("compileSchema", () => {
  it("refuses every keyword it cannot enforce, naming its place in the schema", () => {
    const cases: Array<[unknown, string, RegExp]> = [
      [{ type: "string", pattern: "^(?=a)" }, "pattern", /a lookaround is not supported/],
      [{ type: "string", pattern: "^a{5}$", maxLength: 3 }, "pattern", /cannot all be within/],
      [{ type: "string", pattern: "^(ab+|c)$", minLength: 2 }, "pattern", /shorter than minLength 2/],
      [{ type: "string", format: "ipv4", maxLength: 5 }, "format", /cannot all be within/],
      [
        { type: "object", properties: { d: { type: "string", format: "uri" } } },
        "properties.d.format",
        /"uri" is not supported/,
      ],
      [{ type: "string", format: "uuid", maxLength: 3 }, "format", /cannot be combined/],
      [{ oneOf: [{ type: "string" }] }, "oneOf", /use 'anyOf'/],
      [{ allOf: [] }, "allOf", /allOf/],
      [{ type: "number", exclusiveMinimum: 1, maximum: 1 }, "exclusiveMinimum", /no number/],
      [{ type: "number", minimum: 2e9 }, "minimum", /no number/],
      [{ minimum: 1 }, "minimum", /needs 'type'/],
      [{ type: "integer", minimum: 3, maximum: 2 }, "minimum", /no integer/],
      [{ type: "array", items: { type: "number", multipleOf: 2 } }, "items.multipleOf", /multipleOf/],
      [{ type: "object", additionalProperties: { type: "string" } }, "additionalProperties", /true or false/],
      [{ type: "colour" }, "type", /must be one of/],
      [{ type: "string", maxLength: 1_000_000 }, "maxLength", /above 4096/],
      [{ type: "string", minLength: 3, maxLength: 2 }, "maxLength", /below/],
      [{ enum: [] }, "enum", /non-empty/],
      [{ type: "string", enum: ["a", 1] }, "enum", /not of 'type'/],
      [{ $ref: "#/$defs/missing" }, "$ref", /names no definition/],
      [{ $ref: "#/properties/a" }, "$ref", /not supported/],
      [
        { type: "object", properties: { a: { $defs: {} } } },
        "properties.a.$defs",
        /only supported at the root/,
      ],
      [{ type: "object", required: ["b"], properties: { a: {} } }, "required", /'b'/],
      [{ unknownKeyword: 1 }, "unknownKeyword", /not a supported schema keyword/],
    ];
    for (const [schema, path, message] of cases) {
      const e = schemaError(schema);
      expect(e.path, JSON.stringify(schema)).toBe(path);
      expect(e.message).toMatch(message);
    }
  });

  it("holds strict schemas to OpenAI's strict rules", () => {
    expect(schemaError({ type: "array", items: {} }, true).message).toMatch(/root must be/);
    const open = { type: "object", properties: { a: { type: "string" } }, required: ["a"] };
    expect(schemaError(open, true).path).toBe("additionalProperties");
    const partial = { ...open, required: [], additionalProperties: false };
    expect(schemaError(partial, true).message).toMatch(/missing 'a'/);
    expect(() => compileSchema(person, { strict: true })).not.toThrow();
  });

  it("refuses a definition that reaches itself before producing anything", () => {
    const e = schemaError({
      $defs: { A: { anyOf: [{ $ref: "#/$defs/A" }, { type: "null" }] } },
      $ref: "#/$defs/A",
    });
    expect(e.message).toMatch(/cycle/);
    // Through an object it is a recursive structure, which is fine.
    const tree = {
      $defs: {
        Node: {
          type: "object",
          properties: { v: { type: "integer" }, kids: { type: "array", items: { $ref: "#/$defs/Node" } } },
          required: ["v", "kids"],
          additionalProperties: false,
        },
      },
      $ref: "#/$defs/Node",
    };
    const compiled = compileSchema(tree, { strict: false });
    expect(schemaViolation(compiled, { v: 1, kids: [{ v: 2, kids: [] }] })).toBeUndefined();
    expect(schemaViolation(compiled, { v: 1, kids: [{ v: "x", kids: [] }] })).toBe(
      "$.kids[0].v: expected an integer",
    );
  });

  it("bounds the schema's size", () => {
    let deep: Record<string, unknown> = { type: "string" };
    for (let i = 0; i < 20; i++) deep = { type: "array", items: deep };
    expect(schemaError(deep).message).toMatch(/deeper than 16/);
    expect(schemaError({ enum: Array.from({ length: 1001 }, (_, i) => i) }).message).toMatch(
      /more than 1000/,
    );
  });
});

describe("schemaViolation", () => {
  const compiled = compileSchema(person, { strict: true });

  it("accepts what the schema accepts and names the first place that breaks it", () => {
    expect(schemaViolation(compiled, { name: "ann", age: 3, tags: ["a"], nick: null })).toBeUndefined();
    const bad: Array<[unknown, string]> = [
      [[], "$: expected an object"],
      [{ name: "ann", age: 3, tags: ["a"] }, "$: missing required property 'nick'"],
      [{ name: "annabelle-x", age: 3, tags: ["a"], nick: null }, "$.name: longer than 8 characters"],
      [{ name: "ann", age: 3.5, tags: ["a"], nick: null }, "$.age: expected an integer"],
      [{ name: "ann", age: -1, tags: ["a"], nick: null }, "$.age: below the minimum 0"],
      [{ name: "ann", age: 151, tags: ["a"], nick: null }, "$.age: above the maximum 150"],
      [{ name: "ann", age: 3, tags: [], nick: null }, "$.tags: fewer than 1 items"],
      [{ name: "ann", age: 3, tags: ["c"], nick: null }, "$.tags[0]: not one of the allowed values"],
      [{ name: "ann", age: 3, tags: ["a"], nick: 1 }, "$.nick: matches none of the 'anyOf' options"],
      [{ name: "ann", age: 3, tags: ["a"], nick: null, x: 1 }, "$: property 'x' is not allowed"],
    ];
    for (const [value, why] of bad) expect(schemaViolation(compiled, value)).toBe(why);
  });

  it("counts string length in characters, as JSON Schema does", () => {
    expect(
      schemaViolation(compiled, { name: "😀😀😀😀😀😀😀😀", age: 1, tags: ["b"], nick: "x" }),
    ).toBeUndefined();
  });

  it("compares enum values structurally", () => {
    const c = compileSchema({ enum: [{ a: [1, 2], b: null }] }, { strict: false });
    expect(schemaViolation(c, { b: null, a: [1, 2] })).toBeUndefined();
    expect(schemaViolation(c, { b: null, a: [2, 1] })).toBeDefined();
  });
});

describe("grammars", () => {
  it("writes every declared property in order, optional ones after a comma when present", () => {
    const g = schemaGrammar(
      compileSchema(
        { type: "object", properties: { a: { type: "boolean" }, b: { type: "null" } }, required: ["b"] },
        { strict: false },
      ),
    );
    expect(g).toContain("root ::= n");
    expect(g).toContain('"\\"b\\"" ws ":" ws null');
    expect(g).toMatch(/\("," ws "\\"a\\"" ws ":" ws boolean\)\?/);
    // Only the base rules it uses.
    expect(g).not.toContain("value ::=");
  });

  it("bounds strings and arrays by the schema's bounds", () => {
    const g = schemaGrammar(compileSchema(person, { strict: true }));
    expect(g).toContain('"\\"" char{0,8} "\\""');
    expect(g).toMatch(/\("," ws n\d+\)\{0,2\}/);
  });

  it("escapes literals for GBNF", () => {
    expect(gbnfLiteral('a"b\\c\n\u0001é')).toBe('"a\\"b\\\\c\\n\\x01é"');
    const g = formatGrammar({
      type: "json_schema",
      name: "x",
      strict: false,
      schema: compileSchema({ const: 'say "hi"' }, { strict: false }),
    });
    expect(g).toContain('"\\"say \\\\\\"hi\\\\\\"\\""');
  });

  it("writes exactly the integers within the bounds, with no leading zeros", () => {
    // The GBNF alternatives read as a regular expression: "d" literals, [a-b] ranges, groups.
    const regex = (gbnf: string) =>
      new RegExp(
        `^(?:${gbnf.replace(/"([^"]*)"/g, (_, x: string) => x.replace(/-/g, "\\-")).replace(/ /g, "")})$`,
      );
    const cases: Array<[number, number]> = [
      [0, 0],
      [1, 9],
      [0, 1000],
      [7, 1234],
      [-5, 5],
      [-1200, -3],
      [-99, 101],
      [10, 10],
      [Number.NEGATIVE_INFINITY, 42],
      [-17, Number.POSITIVE_INFINITY],
    ];
    for (const [min, max] of cases) {
      const re = regex(integerRange(min, max));
      for (let v = -1300; v <= 1300; v++)
        expect(re.test(String(v)), `${v} in [${min}, ${max}]`).toBe(v >= min && v <= max);
      for (const text of ["01", "-0", "007", "", "-"]) expect(re.test(text), text).toBe(false);
    }
    const safe = regex(integerRange(-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER));
    expect(safe.test(String(Number.MAX_SAFE_INTEGER))).toBe(true);
    expect(safe.test("9007199254740992")).toBe(false);
    expect(safe.test("-9007199254740991")).toBe(true);
  });

  it("writes exactly the language of each string format, as its validator checks it", () => {
    // The rules of a format read as one regular expression (literals, classes, groups, references).
    const asRegex = (rules: Record<string, string>, name: string): string =>
      (rules[name] as string).replace(
        /"((?:[^"\\]|\\.)*)"|(\[[^\]]*\]|\{[0-9,]+\})|([a-z][a-z-]*[a-z])|\s+/g,
        (_, literal?: string, same?: string, ref?: string) => {
          if (same !== undefined) return same;
          if (literal !== undefined) {
            const text = literal.replace(/\\(.)/g, "$1");
            return text.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&");
          }
          if (ref !== undefined) return `(?:${asRegex(rules, ref)})`;
          return "";
        },
      );
    const grammarOf = (format: "date" | "date-time" | "uuid") =>
      new RegExp(`^${asRegex(FORMAT_RULES[format], Object.keys(FORMAT_RULES[format]).at(-1) as string)}$`);
    const date = grammarOf("date");
    // Every day of the months around the edges of five years, against the calendar.
    for (const year of [1900, 2000, 2023, 2024, 2100]) {
      for (let month = 0; month <= 13; month++) {
        for (let day = 0; day <= 32; day++) {
          const text = `${year}-${String(month).padStart(2, "0")}-${String(day).padStart(2, "0")}`;
          const real = new Date(Date.UTC(year, month - 1, day));
          const valid = month >= 1 && month <= 12 && day >= 1 && real.getUTCDate() === day;
          expect(FORMAT_PATTERNS.date.test(text), text).toBe(valid);
          expect(date.test(`"${text}"`), text).toBe(valid);
        }
      }
    }
    const dateTime = grammarOf("date-time");
    for (const [text, valid] of [
      ["2024-02-29T23:59:59Z", true],
      ["2024-02-29T23:59:59.123456789Z", true],
      ["2023-02-29T00:00:00Z", false],
      ["2024-01-01T24:00:00Z", false],
      ["2024-01-01T10:00:00+02:00", false],
      ["2024-01-01T10:00Z", false],
      ["2024-01-01T10:00:00.Z", false],
    ] as const) {
      expect(FORMAT_PATTERNS["date-time"].test(text), text).toBe(valid);
      expect(dateTime.test(`"${text}"`), text).toBe(valid);
    }
    const uuid = grammarOf("uuid");
    for (const [text, valid] of [
      ["123e4567-e89b-12d3-a456-426614174000", true],
      ["123e4567-e89b-02d3-a456-426614174000", false],
      ["123e4567-e89b-12d3-c456-426614174000", false],
      ["123E4567-e89b-12d3-a456-426614174000", false],
      ["123e4567e89b12d3a456426614174000", false],
    ] as const) {
      expect(FORMAT_PATTERNS.uuid.test(text), text).toBe(valid);
      expect(uuid.test(`"${text}"`), text).toBe(valid);
    }
  });

  it("json_object is one object of any JSON", () => {
    const g = jsonObjectGrammar();
    expect(g.split("\n")[0]).toBe("root ::= object");
    expect(g).toContain("value ::= object | array | string | number | boolean | null");
  });
});

describe("readResponseFormat", () => {
  it("reads the three types", () => {
    expect(readResponseFormat({})).toBeUndefined();
    expect(readResponseFormat({ response_format: { type: "text" } })).toBeUndefined();
    expect(readResponseFormat({ response_format: { type: "json_object" } })).toEqual({ type: "json_object" });
    const f = readResponseFormat({
      response_format: { type: "json_schema", json_schema: { name: "p", strict: true, schema: person } },
    });
    expect(f).toMatchObject({ type: "json_schema", name: "p", strict: true });
  });

  it("names the parameter of each mistake", () => {
    expect(bodyError({ response_format: "json" }).param).toBe("response_format");
    expect(bodyError({ response_format: { type: "xml" } }).param).toBe("response_format.type");
    expect(bodyError({ response_format: { type: "json_schema" } }).param).toBe("response_format.json_schema");
    expect(bodyError({ response_format: { type: "json_schema", json_schema: { name: "a b" } } }).param).toBe(
      "response_format.json_schema.name",
    );
    const e = bodyError({
      response_format: {
        type: "json_schema",
        json_schema: {
          name: "p",
          schema: { type: "object", properties: { d: { type: "string", pattern: "(a)\\1" } } },
        },
      },
    });
    expect(e.param).toBe("response_format.json_schema.schema.properties.d.pattern");
    expect(e.message).toMatch(/^Invalid schema for response_format 'p': the escape \\1 is not supported/);
  });
});

describe("formatViolation", () => {
  it("holds text to JSON, an object for json_object, the schema for json_schema", () => {
    expect(formatViolation({ type: "json_object" }, '{"a": [1]}')).toBeUndefined();
    expect(formatViolation({ type: "json_object" }, "[1]")).toBe("the output is not a JSON object");
    expect(formatViolation({ type: "json_object" }, '{"a": ')).toBe("the output is not JSON");
    const f = {
      type: "json_schema",
      name: "p",
      strict: true,
      schema: compileSchema(person, { strict: true }),
    } as const;
    expect(formatViolation(f, '{"name":"a","age":1,"tags":["b"],"nick":null}')).toBeUndefined();
    expect(formatViolation(f, '{"name":"a","age":1,"tags":["b"]}')).toBe(
      "$: missing required property 'nick'",
    );
  });
});
