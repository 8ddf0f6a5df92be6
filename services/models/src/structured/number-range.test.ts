import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Xoshiro128 } from "../synth/random.js";
import { grammarAccepts, openVocabularies } from "./grammar-check.test-support.js";
import { compileSchema, schemaGrammar, schemaViolation } from "./index.js";

// Bounded numbers, held on llama.cpp's grammar sampler to the bounds themselves: every number the
// grammar accepts is within them, and every plain decimal within them (at most 9 integer and 6
// fraction digits) is accepted.

const EDGES = [0, 1, -1, 0.5, -0.75, 2.25, 100, 0.001, 1e-7, 5, 0.1, 12.345678, -100.5, 999_999_999.5];

let vocabulary: Awaited<ReturnType<typeof openVocabularies>>;

beforeAll(async () => {
  vocabulary = await openVocabularies();
});

afterAll(async () => {
  await vocabulary?.close();
});

/** Decimal texts near the bounds and the edges: what a model could write. */
function candidates(random: Xoshiro128, around: number[]): string[] {
  const out = new Set<string>(["0", "-0", "0.0", "1", "-1", "0.5", "10", "0.000001", "-0.000001"]);
  for (const base of [...around, ...EDGES]) {
    for (let i = 0; i < 12; i++) {
      const step = [0, 1, 0.5, 0.1, 0.01, 0.000001, 3, 1e-7][random.next() % 8] as number;
      const sign = random.next() % 2 === 0 ? 1 : -1;
      const v = base + sign * step;
      const digits = random.next() % 7;
      out.add(v.toFixed(digits));
    }
  }
  return [...out].filter((t) => !/e/.test(t));
}

/** Whether a plain decimal is one the grammar writes (at most 9 integer and 6 fraction digits). */
const writable = (text: string) => /^-?(0|[1-9]\d{0,8})(\.\d{1,6})?$/.test(text);

describe("bounded numbers", () => {
  it("accept exactly the decimals within the bounds", () => {
    const random = new Xoshiro128(11);
    let accepted = 0;
    for (let round = 0; round < 40; round++) {
      const pick = () => EDGES[random.next() % EDGES.length] as number;
      let [a, b] = [pick(), pick()].sort((x, y) => x - y) as [number, number];
      const schema: Record<string, unknown> = { type: "number" };
      const lowerKind = random.next() % 3; // none, inclusive, exclusive
      const upperKind = random.next() % 3;
      if (lowerKind === 0 && upperKind === 0) b = a + 1;
      if (lowerKind === 1) schema.minimum = a;
      if (lowerKind === 2) schema.exclusiveMinimum = a;
      if (upperKind === 1 || (lowerKind === 0 && upperKind === 0)) schema.maximum = b;
      if (upperKind === 2) schema.exclusiveMaximum = b;
      let compiled: ReturnType<typeof compileSchema>;
      try {
        compiled = compileSchema(schema, { strict: false });
      } catch {
        continue; // an empty range (a == b with an exclusive side)
      }
      const grammar = schemaGrammar(compiled);
      for (const text of candidates(random, [a, b])) {
        const within = schemaViolation(compiled, JSON.parse(text)) === undefined;
        const ok = grammarAccepts(vocabulary.llama, vocabulary.get("tiny").model, grammar, text);
        if (ok) accepted++;
        expect(ok && !within, `${JSON.stringify(schema)} accepted ${text}`).toBe(false);
        if (within && writable(text) && text !== "-0" && !/^-0\.0*$/.test(text)) {
          expect(ok, `${JSON.stringify(schema)} refused ${text}`).toBe(true);
        }
      }
    }
    expect(accepted).toBeGreaterThan(100);
  }, 120_000);

  it("check the bounds themselves, exclusive ones included", () => {
    const unit = compileSchema({ type: "number", minimum: 0, maximum: 1 }, { strict: false });
    expect(schemaViolation(unit, 0.25)).toBeUndefined();
    expect(schemaViolation(unit, 1.5)).toBe("$: above the maximum 1");
    const positive = compileSchema({ type: "number", exclusiveMinimum: 0 }, { strict: false });
    expect(schemaViolation(positive, 0)).toBe("$: not above the minimum 0");
    expect(schemaViolation(positive, 1e-9)).toBeUndefined();
  });
});
