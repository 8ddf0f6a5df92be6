import { describe, expect, it } from "vitest";
import { ExpositionError, parsePrometheusText, sampleValue } from "./prometheus-text.js";

const GOOD = [
  "# HELP a_total Things, with a \\\\ and a\\nnewline.",
  "# TYPE a_total counter",
  'a_total{model="x",why="say \\"hi\\"\\n"} 3',
  "a_total 1.5e2",
  "# TYPE h histogram",
  'h_bucket{le="+Inf"} 2',
  "h_sum 0.25",
  "h_count 2",
  "# a comment",
  "g NaN",
  "",
].join("\n");

describe("the Prometheus text reader of the tests", () => {
  it("reads families, types, help, escaped labels and special values", () => {
    const families = parsePrometheusText(GOOD.replace("g NaN", "# TYPE g gauge\ng Nan"));
    expect(families.get("a_total")?.help).toBe("Things, with a \\ and a\nnewline.");
    expect(sampleValue(families, "a_total", { model: "x", why: 'say "hi"\n' })).toBe(3);
    expect(sampleValue(families, "a_total")).toBe(150);
    expect(sampleValue(families, "h_bucket", { le: "+Inf" })).toBe(2);
    expect(sampleValue(families, "h_count")).toBe(2);
    expect(sampleValue(families, "g")).toBeNaN();
    expect(sampleValue(families, "a_total", { model: "y" })).toBeUndefined();
  });

  it.each([
    ["a sample of no family", "x 1\n"],
    ["no final newline", "# TYPE x gauge\nx 1"],
    ["a bad value", "# TYPE x gauge\nx one\n"],
    ["two spaces", "# TYPE x gauge\nx  1\n"],
    ["an unterminated label", '# TYPE x gauge\nx{a="1} 1\n'],
    ["a bad label name", '# TYPE x gauge\nx{1a="1"} 1\n'],
    ["a label twice", '# TYPE x gauge\nx{a="1",a="2"} 1\n'],
    ["a series twice", "# TYPE x gauge\nx 1\nx 2\n"],
    ["a TYPE twice", "# TYPE x gauge\n# TYPE x gauge\n"],
    ["an unknown type", "# TYPE x thing\n"],
    ["a histogram sample without its suffix", "# TYPE h histogram\nh 1\n"],
  ])("refuses %s", (_, text) => {
    expect(() => parsePrometheusText(text)).toThrow(ExpositionError);
  });
});
