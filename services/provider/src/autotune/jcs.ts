/**
 * RFC 8785 JSON Canonicalization Scheme (JCS): the bytes a recipe's hash is taken over. Small on
 * purpose: objects with keys sorted by UTF-16 code units, no whitespace, strings escaped as
 * ECMAScript's JSON.stringify does (only `"`, `\` and controls below U+0020), numbers in ECMAScript's
 * Number-to-String form (which is what JCS prescribes), and no value JSON cannot carry.
 */

/** A value that has no canonical JSON form (NaN, Infinity, undefined, a lone surrogate, a cycle…). */
export class JcsError extends Error {
  override readonly name = "JcsError";
}

/** The canonical JSON text of `value` (RFC 8785); throws JcsError for what JSON cannot represent. */
export function canonicalize(value: unknown): string {
  return serialize(value, new Set<object>());
}

function serialize(value: unknown, open: Set<object>): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "number":
      if (!Number.isFinite(value)) throw new JcsError(`${value} has no JSON form`);
      // ECMAScript's Number::toString is JCS's number format (RFC 8785 §3.2.2.3); -0 prints as 0.
      return String(value);
    case "string":
      return string(value);
    case "object":
      break;
    default:
      throw new JcsError(`a ${typeof value} has no JSON form`);
  }
  const object = value as object;
  if (open.has(object)) throw new JcsError("a cyclic structure has no JSON form");
  open.add(object);
  try {
    if (Array.isArray(object)) return `[${object.map((item) => serialize(item, open)).join(",")}]`;
    const proto = Object.getPrototypeOf(object);
    if (proto !== Object.prototype && proto !== null)
      throw new JcsError(`a ${proto?.constructor?.name ?? "non-plain"} object has no canonical JSON form`);
    // The default sort compares UTF-16 code units, which is the order JCS prescribes (§3.2.3).
    const keys = Object.keys(object).sort();
    const members = keys.map(
      (key) => `${string(key)}:${serialize((object as Record<string, unknown>)[key], open)}`,
    );
    return `{${members.join(",")}}`;
  } finally {
    open.delete(object);
  }
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function string(text: string): string {
  if (LONE_SURROGATE.test(text)) throw new JcsError("a string with a lone surrogate is not valid Unicode");
  // JSON.stringify escapes exactly what JCS escapes (", \, and U+0000..U+001F with the short forms
  // \b \t \n \f \r and lowercase \u00xx otherwise) once lone surrogates are excluded.
  return JSON.stringify(text);
}
