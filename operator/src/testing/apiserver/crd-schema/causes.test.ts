import { describe, expect, test } from "vitest";
import { GoRepr, goFloat, goSharpV, invalid, notSupported, OMIT, tooMany } from "./causes.js";

describe("field errors as the server words them", () => {
  test.each([
    [0.5, "0.5"],
    [123456.5, "123456.5"],
    [1e6, "1e+06"],
    [2000000.5, "2.0000005e+06"],
    [0.00001, "1e-05"],
    [-1.5e-7, "-1.5e-07"],
  ])("a float64 %d prints as %s", (value, text) => {
    expect(goFloat(value)).toBe(text);
  });

  test("maps and lists print with Go's %#v", () => {
    expect(goSharpV({ b: [1, "x", null], a: 1.5 })).toBe(
      'map[string]interface {}{"a":1.5, "b":[]interface {}{1, "x", interface {}(nil)}}',
    );
  });

  test("bad values are quoted, printed, left out or given verbatim", () => {
    expect(invalid("f", "x", "bad").message).toBe('Invalid value: "x": bad');
    expect(invalid("f", 3, "bad").message).toBe("Invalid value: 3: bad");
    expect(invalid("f", OMIT, "bad").message).toBe("Invalid value: bad");
    expect(invalid("f", new GoRepr("T{}"), "bad").message).toBe("Invalid value: T{}: bad");
    expect(notSupported("f", 1, []).message).toBe("Unsupported value: 1");
    expect(tooMany("f", 5, 1)).toEqual({
      reason: "FieldValueTooMany",
      field: "f",
      message: "Too many: 5: must have at most 1 item",
    });
  });
});
