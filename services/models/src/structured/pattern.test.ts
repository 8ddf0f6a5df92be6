import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { Xoshiro128 } from "../synth/random.js";
import { PATTERN_FORMATS } from "./formats.js";
import { grammarAccepts, openVocabularies } from "./grammar-check.test-support.js";
import { compileSchema, SchemaError, schemaGrammar, schemaViolation } from "./index.js";
import { compilePattern, PatternError } from "./pattern.js";

/** The patterns zod 4 writes beside its string formats, and some of our own. */
const ZOD = z.toJSONSchema(
  z.object({
    uuid: z.uuid(),
    guid: z.guid(),
    email: z.email(),
    date: z.iso.date(),
    datetime: z.iso.datetime(),
    time: z.iso.time(),
    ipv4: z.ipv4(),
    e164: z.e164(),
    cuid: z.cuid(),
    base64: z.base64(),
    starts: z.string().startsWith("ab"),
    ends: z.string().endsWith("z"),
    includes: z.string().includes("x"),
    regex: z.string().regex(/^[a-z]{2,5}(-\d+)?$/),
  }),
) as { properties: Record<string, { pattern: string }> };
const PATTERNS: Record<string, string> = {
  ...Object.fromEntries(Object.entries(ZOD.properties).map(([k, v]) => [k, v.pattern])),
  classes: "^[^a-c\\d][\\w.-]*\\s?[\\x41-\\x43\\u00e9]{1,3}$",
  escapes: '^"?\\\\[\\t]?\\.{0,2}(\\n|\\r)?$',
  alternatives: "^cat|dog$|^bird$",
  dot: "^a.b$",
  empty: "^$",
  groups: "^(?<word>ab)+(?:c|d)*?e{2}$",
  // The formats written by their expression without one beside them.
  utc: PATTERN_FORMATS.time as string,
  hostname: PATTERN_FORMATS.hostname as string,
};

describe("compilePattern", () => {
  it("reads what zod 4 writes", () => {
    for (const [name, source] of Object.entries(PATTERNS)) {
      expect(() => compilePattern(source), name).not.toThrow();
    }
  });

  it.each([
    ["(?=a)b", /a lookaround/],
    ["(?<!a)b", /a lookaround/],
    ["(a)\\1", /the escape \\1/],
    ["\\bword", /a word boundary/],
    ["a^b", /'\^' anywhere but at the ends/],
    ["(a$)", /'\$' anywhere but at the ends/],
    ["\\p{L}", /the escape \\p/],
    ["😀+", /outside the Basic Multilingual Plane/],
    ["[😀]", /outside the Basic Multilingual Plane/],
    ["a{2000}", /a repetition over 1024/],
    ["(a{1000}){1000}", /too large/],
    ["[\\x00-\\x08]", /matching no character/],
    ["(", /not a valid regular expression/],
    ["a**", /not a valid regular expression/],
    ["x".repeat(1001), /longer than 1000/],
  ])("refuses %s", (source, message) => {
    expect(() => compilePattern(source)).toThrow(PatternError);
    expect(() => compilePattern(source)).toThrow(message);
  });

  it("in a schema: the pattern is checked with the expression itself; a format beside it is its name", () => {
    const schema = compileSchema(
      { type: "string", format: "email", pattern: "^[a-z]+@[a-z]+\\.[a-z]{2,}$" },
      { strict: false },
    );
    expect(schemaViolation(schema, "ann@example.org")).toBeUndefined();
    expect(schemaViolation(schema, "ann@example")).toBe("$: does not match the pattern");
    // JSON Schema's pattern matches anywhere unless anchored.
    const contains = compileSchema({ type: "string", pattern: "x" }, { strict: false });
    expect(schemaViolation(contains, "axb")).toBeUndefined();
    expect(schemaViolation(contains, "ab")).toBe("$: does not match the pattern");
    expect(() => compileSchema({ type: "string", pattern: 5 }, { strict: false })).toThrow(SchemaError);
  });
});

describe("formats written by their expression", () => {
  it("email and ipv4: what they accept every common checker accepts", () => {
    const email = compileSchema({ type: "string", format: "email" }, { strict: false });
    const ipv4 = compileSchema({ type: "string", format: "ipv4" }, { strict: false });
    const checkers = [
      // zod 4's, zod 3's, and the HTML living standard's valid e-mail address.
      new RegExp(ZOD.properties.email?.pattern ?? ""),
      /^(?!\.)(?!.*\.\.)([A-Z0-9_'+\-.]*)[A-Z0-9_+-]@([A-Z0-9][A-Z0-9-]*\.)+[A-Z]{2,}$/i,
      /^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/,
    ];
    const random = new Xoshiro128(5);
    const pieces = ["a", "b", "z", "0", "9", ".", "-", "_", "+", "@", "x.io", "mail", "co", "A"];
    let valid = 0;
    for (let i = 0; i < 20_000; i++) {
      let text = "";
      for (let j = random.next() % 14; j >= 0; j--) text += pieces[random.next() % pieces.length];
      if (schemaViolation(email, text) !== undefined) continue;
      valid++;
      for (const checker of checkers) expect(checker.test(text), `${checker}: ${text}`).toBe(true);
    }
    expect(valid).toBeGreaterThan(20);
    expect(schemaViolation(email, "ann.lee+tag@mail.example.org")).toBeUndefined();
    expect(schemaViolation(email, "ann..lee@example.org")).toBeDefined();
    expect(schemaViolation(ipv4, "192.168.0.1")).toBeUndefined();
    for (const bad of ["256.1.1.1", "01.2.3.4", "1.2.3"]) expect(schemaViolation(ipv4, bad)).toBeDefined();
    expect(new RegExp(ZOD.properties.ipv4?.pattern ?? "").test("10.0.0.255")).toBe(true);
  });

  it("time and hostname: what they accept JSON Schema's and Pydantic's checkers accept", () => {
    const random = new Xoshiro128(9);
    const sample = (format: string, pieces: string[], checkers: RegExp[]) => {
      const schema = compileSchema({ type: "string", format }, { strict: false });
      let valid = 0;
      for (let i = 0; i < 20_000; i++) {
        let text = "";
        for (let j = random.next() % 10; j >= 0; j--) text += pieces[random.next() % pieces.length];
        if (schemaViolation(schema, text) !== undefined) continue;
        valid++;
        for (const checker of checkers)
          expect(checker.test(text), `${format} ${checker}: ${text}`).toBe(true);
      }
      return { schema, valid };
    };
    // ajv-formats' full `time` and Pydantic's time (an offset or Z after the seconds).
    const time = sample(
      "time",
      ["0", "1", "2", "3", "5", "9", ":", ".", "Z", "z", "+", "23:59:", "00:00:00", "12:30:45"],
      [
        /^(\d\d):(\d\d):(\d\d(?:\.\d+)?)(z|([+-])(\d\d)(?::?(\d\d))?)$/i,
        /^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,9})?)?(Z|[+-]\d\d:?\d\d)?$/,
      ],
    );
    expect(time.valid).toBeGreaterThan(10);
    expect(schemaViolation(time.schema, "23:59:59.125Z")).toBeUndefined();
    for (const bad of ["24:00:00Z", "12:60:00Z", "12:00:00", "12:00Z"])
      expect(schemaViolation(time.schema, bad), bad).toBeDefined();
    // ajv-formats' `hostname` (RFC 1123, at most 253 characters).
    const hostname = sample(
      "hostname",
      ["a", "b", "z", "0", "9", "-", ".", "--", "..", "x1", "example", "com", "A", "_"],
      [
        /^(?=.{1,253}\.?$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[-0-9a-z]{0,61}[0-9a-z])?)*\.?$/i,
      ],
    );
    expect(hostname.valid).toBeGreaterThan(20);
    expect(schemaViolation(hostname.schema, "api-1.example.com")).toBeUndefined();
    for (const bad of ["-a.com", "a-.com", "a..com", "a_b.com", `${"a".repeat(64)}.com`])
      expect(schemaViolation(hostname.schema, bad), bad).toBeDefined();
  });
});

describe("the grammar of a pattern, on llama.cpp's grammar sampler", () => {
  let vocabulary: Awaited<ReturnType<typeof openVocabularies>>;
  const accepts = (grammar: string, text: string) =>
    grammarAccepts(vocabulary.llama, vocabulary.get("tiny").model, grammar, text);

  beforeAll(async () => {
    vocabulary = await openVocabularies();
  });

  afterAll(async () => {
    await vocabulary?.close();
  });

  /** Strings near what a pattern matches: pieces of its own text, and characters around them. */
  function candidates(source: string, count: number, seed: number): string[] {
    const random = new Xoshiro128(seed);
    const pieces = [
      ...new Set([
        ...source.replace(/[\\^$()[\]{}*+?|]/g, " ").split(/\s+/),
        ...'abcdexyzAB019-:._@T Z+/="\\\t\né'.split(""),
      ]),
    ].filter((p) => p !== "");
    const out: string[] = [];
    for (let i = 0; i < count; i++) {
      let text = "";
      const length = random.next() % 12;
      for (let j = 0; j < length; j++) text += pieces[random.next() % pieces.length];
      out.push(text);
    }
    return out;
  }

  /** Strings the pattern matches, written from its own examples. */
  const EXAMPLES: Record<string, string[]> = {
    uuid: ["123e4567-e89b-12d3-a456-426614174000", "00000000-0000-0000-0000-000000000000"],
    guid: ["123e4567-e89b-02d3-f456-426614174000"],
    email: ["ann@example.org", "a.b+c@x-y.co"],
    date: ["2024-02-29", "1999-12-31"],
    datetime: ["2024-02-29T23:59:59Z", "2000-01-01T00:00:00.123Z"],
    time: ["23:59", "00:00:00.5"],
    ipv4: ["192.168.0.1", "255.255.255.255"],
    hostname: ["example.com", "a-1.b2.c-d-e.io"],
    utc: ["23:59:59Z", "00:00:00.123456789Z"],
    e164: ["+14155550123"],
    cuid: ["cjld2cjxh0000qzrmn831i7rn"],
    base64: ["", "YWJj", "YQ=="],
    starts: ["ab", "abzz"],
    ends: ["z", "zzz"],
    includes: ["x", "axb"],
    regex: ["ab", "abcde-12"],
    classes: ["xa_b.-C", "Z é"],
    escapes: ['"\\\t..\n', "\\"],
    alternatives: ["cat food", "hot dog", "bird"],
    dot: ["a-b", "aéb"],
    empty: [""],
    groups: ["ababcdcee", "abee"],
  };

  it("with length bounds beside it, writes only matches within them", () => {
    const zod = z.toJSONSchema(
      z.object({
        email: z.email().max(64),
        word: z
          .string()
          .regex(/^[a-z]+(-[a-z]+)*$/)
          .min(6)
          .max(12),
        any: z.string().regex(/x/).min(3).max(5),
      }),
    ) as { properties: Record<string, Record<string, unknown>> };
    const cases: Array<[string, Record<string, unknown>, string[]]> = [
      ["email", { type: "string", ...zod.properties.email }, ["ann@example.org"]],
      ["word", { type: "string", ...zod.properties.word }, ["abcdef", "abcdef-g-h", "abcdefgh"]],
      ["any", { type: "string", ...zod.properties.any }, ["axb", "xxxxx"]],
      [
        "hostname",
        { type: "string", format: "hostname", minLength: 4, maxLength: 9 },
        ["abcd", "abcd.i", "abcde-f"],
      ],
    ];
    for (const [name, source, examples] of cases) {
      const schema = compileSchema(source, { strict: false });
      const grammar = schemaGrammar(schema);
      const { minLength = 0, maxLength } = source as { minLength?: number; maxLength?: number };
      for (const text of examples) {
        expect(schemaViolation(schema, text), `${name}: ${text}`).toBeUndefined();
        expect(accepts(grammar, JSON.stringify(text)), `${name}: ${text}`).toBe(true);
      }
      const regex = new RegExp(
        (source.pattern as string | undefined) ?? PATTERN_FORMATS[source.format as string] ?? "",
      );
      const pieces = [...examples, ...examples.flatMap((e) => e.split("")), "@", ".", "-", "x", "zz"];
      const random = new Xoshiro128(name.length);
      let accepted = 0;
      for (let i = 0; i < 300; i++) {
        let text = "";
        for (let j = random.next() % 6; j >= 0; j--) text += pieces[random.next() % pieces.length];
        if (!accepts(grammar, JSON.stringify(text))) continue;
        accepted++;
        const length = [...text].length;
        expect(
          regex.test(text) && length >= minLength && length <= (maxLength ?? length),
          `${name} wrote ${text}`,
        ).toBe(true);
        expect(schemaViolation(schema, text)).toBeUndefined();
      }
      expect(accepted, name).toBeGreaterThan(0);
    }
  }, 60_000);

  it("accepts exactly what the expression matches, as the JSON string the model writes", () => {
    for (const [name, source] of Object.entries(PATTERNS)) {
      const schema = compileSchema({ type: "string", pattern: source }, { strict: false });
      const grammar = schemaGrammar(schema);
      const regex = new RegExp(source);
      for (const text of EXAMPLES[name] ?? []) {
        expect(regex.test(text), `${name}: ${JSON.stringify(text)} is an example`).toBe(true);
        expect(accepts(grammar, JSON.stringify(text)), `${name}: ${JSON.stringify(text)}`).toBe(true);
      }
      for (const text of candidates(source, 60, name.length * 7919)) {
        const json = JSON.stringify(text);
        // The grammar writes a subset: every string it accepts matches (and, where JSON needs no
        // escape it leaves out, every string that matches it accepts).
        const accepted = accepts(grammar, json);
        if (accepted) expect(regex.test(text), `${name} accepted ${json}`).toBe(true);
        else if (![...text].some((c) => c < " " && !"\t\n\r".includes(c)))
          expect(regex.test(text), `${name} refused ${json}`).toBe(false);
      }
    }
  }, 60_000);
});
