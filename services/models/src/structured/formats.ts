/**
 * The string formats the grammar writes, each once as GBNF (what the provider decodes under) and once
 * as a regular expression of the same language (what the coordinator checks), side by side so that
 * they cannot drift: the structured tests hold every grammar to its expression.
 *
 * Each writes a subset of what JSON Schema's format allows and of what zod checks, so an answer
 * passes both: `date` is RFC 3339's full-date with real month lengths and leap years (zod's
 * `iso.date()`); `date-time` is that date, "T", a time to the second with up to 9 fraction digits and
 * "Z" (zod's `iso.datetime()` takes no offset by default); `uuid` is lower-case RFC 9562 with a
 * version of 1 to 8 and the variant bits 10 (zod's `uuid()`).
 */

import type { StringFormat } from "./schema.js";

/** Quoted JSON strings: the GBNF rules (name → body) a format's rule uses, its own last. */
export const FORMAT_RULES: Record<StringFormat, Record<string, string>> = {
  date: {
    "format-date": dateGbnf(),
    "format-date-string": '"\\"" format-date "\\""',
  },
  "date-time": {
    "format-date": dateGbnf(),
    "format-date-time-string":
      '"\\"" format-date "T" ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,9})? "Z" "\\""',
  },
  uuid: {
    "format-uuid-string":
      '"\\"" [0-9a-f]{8} "-" [0-9a-f]{4} "-" [1-8] [0-9a-f]{3} "-" [89ab] [0-9a-f]{3} "-" [0-9a-f]{12} "\\""',
  },
};

const DATE =
  "(?:\\d\\d(?:[2468][048]|[13579][26]|0[48])|(?:[02468][048]|[13579][26])00)-02-29" +
  "|\\d{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\\d|30)|02-(?:0[1-9]|1\\d|2[0-8]))";

/** The unquoted string values each format accepts. */
export const FORMAT_PATTERNS: Record<StringFormat, RegExp> = {
  date: new RegExp(`^(?:${DATE})$`),
  "date-time": new RegExp(`^(?:${DATE})T(?:[01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(?:\\.\\d{1,9})?Z$`),
  uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
};

/**
 * Formats written by their expression (pattern.ts), each a subset of what JSON Schema's format, zod 3
 * and zod 4 and Pydantic accept: `email` is lower-case dot-atoms (no quoted local parts, IP literals
 * or leading, trailing or doubled dots) with a top-level domain of 2 to 6 letters; `ipv4` is dotted
 * decimal without leading zeros; `time` is RFC 3339's full-time in UTC (seconds, up to 9 fraction
 * digits, "Z": JSON Schema's `time` requires an offset); `hostname` is RFC 1123 labels of lower-case
 * letters and digits joined by single hyphens, at most 4 labels of at most 62 characters (within
 * the 63 a label and 253 a name may have).
 */
export const PATTERN_FORMATS: Record<string, string> = {
  time: "^(?:[01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(?:\\.\\d{1,9})?Z$",
  hostname: "^[a-z0-9]{1,20}(?:-[a-z0-9]{1,20}){0,2}(?:\\.[a-z0-9]{1,20}(?:-[a-z0-9]{1,20}){0,2}){0,3}$",
  email:
    "^[a-z0-9]+(?:[._+-][a-z0-9]+){0,3}@[a-z0-9]+(?:-[a-z0-9]+){0,2}(?:\\.[a-z0-9]+(?:-[a-z0-9]+){0,2}){0,2}\\.[a-z]{2,6}$",
  ipv4: "^(?:(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)\\.){3}(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)$",
};

/** The rule of a format's quoted string (the last of its rules). */
export function formatRule(format: StringFormat): string {
  return Object.keys(FORMAT_RULES[format]).at(-1) as string;
}

/**
 * A date: February 29 only in leap years (a year divisible by 4, centuries only when divisible by
 * 400), other days by their month's length.
 */
function dateGbnf(): string {
  const leapYear =
    '[0-9] [0-9] ([2468] [048] | [13579] [26] | "0" [48]) | ([02468] [048] | [13579] [26]) "00"';
  const day31 = '"0" [1-9] | [12] [0-9] | "3" [01]';
  const day30 = '"0" [1-9] | [12] [0-9] | "30"';
  const day28 = '"0" [1-9] | "1" [0-9] | "2" [0-8]';
  return (
    `(${leapYear}) "-02-29" | [0-9]{4} "-" (("0" [13578] | "1" [02]) "-" (${day31}) | ` +
    `("0" [469] | "11") "-" (${day30}) | "02-" (${day28}))`
  );
}
