/**
 * Numbers within bounds (`minimum`, `maximum` and their exclusive forms on a "number"), as GBNF:
 * the integer part digit by digit (gbnf.ts naturalRange), and at a bound's integer part the
 * fraction digit by digit against the bound's own digits, so that no number outside the bounds is
 * written. It writes plain decimals of at most 9 integer and 6 fraction digits (a subset: no
 * exponents, no more digits), at most 15 significant digits: two different such decimals are
 * different doubles, so a number written just past an exclusive bound never parses to the bound
 * itself. The output is checked against the bounds themselves (withinBounds).
 */

export interface NumberBounds {
  min: number | undefined;
  minExclusive: boolean;
  max: number | undefined;
  maxExclusive: boolean;
}

/** A non-negative decimal: its integer part and its fraction's digits (no trailing zeros). */
interface Decimal {
  int: bigint;
  frac: string;
}

const MAX_INT = 999_999_999n;
const FRACTION_DIGITS = 6;
const CAP: Decimal = { int: MAX_INT, frac: "9".repeat(FRACTION_DIGITS) };

/** Why a number is outside the bounds, or undefined. */
export function outsideBounds(b: NumberBounds, value: number): string | undefined {
  if (b.min !== undefined && (b.minExclusive ? value <= b.min : value < b.min)) {
    return `${b.minExclusive ? "not above" : "below"} the minimum ${b.min}`;
  }
  if (b.max !== undefined && (b.maxExclusive ? value >= b.max : value > b.max)) {
    return `${b.maxExclusive ? "not below" : "above"} the maximum ${b.max}`;
  }
  return undefined;
}

/**
 * The GBNF expression of the numbers within `b` the grammar writes; undefined when it writes none
 * (the bounds leave no such number).
 */
export function numberRangeExpression(
  b: NumberBounds,
  naturals: (a: bigint, z: bigint) => string[],
  literal: (text: string) => string,
): string | undefined {
  const alternatives: string[] = [];
  // Negative numbers: "-" and their magnitudes y = -x, within (max(0, -max), -min).
  if (b.min === undefined || b.min < 0) {
    const hiY =
      b.min === undefined ? { d: CAP, strict: false } : { d: decimal(-b.min), strict: b.minExclusive };
    const loY =
      b.max !== undefined && b.max < 0
        ? { d: decimal(-b.max), strict: b.maxExclusive }
        : { d: { int: 0n, frac: "" }, strict: true };
    const magnitudes = positive(loY.d, loY.strict, hiY.d, hiY.strict, naturals, literal);
    if (magnitudes !== undefined) alternatives.push(`"-" (${magnitudes})`);
  }
  // Non-negative numbers, within (max(0, min), max).
  if (b.max === undefined || b.max > 0 || (b.max === 0 && !b.maxExclusive)) {
    const lo =
      b.min !== undefined && b.min >= 0
        ? { d: decimal(b.min), strict: b.minExclusive }
        : { d: decimal(0), strict: false };
    const hi =
      b.max === undefined ? { d: CAP, strict: false } : { d: decimal(b.max), strict: b.maxExclusive };
    const values = positive(lo.d, lo.strict, hi.d, hi.strict, naturals, literal);
    if (values !== undefined) alternatives.push(values);
  }
  return alternatives.length === 0 ? undefined : alternatives.join(" | ");
}

/** Non-negative decimals between lo and hi (each inclusive unless strict), capped at CAP. */
function positive(
  lo: Decimal,
  loStrict: boolean,
  hiIn: Decimal,
  hiStrictIn: boolean,
  naturals: (a: bigint, z: bigint) => string[],
  literal: (text: string) => string,
): string | undefined {
  const capped = hiIn.int > MAX_INT;
  const hi = capped ? CAP : hiIn;
  const hiStrict = capped ? false : hiStrictIn;
  if (lo.int > hi.int) return undefined;
  const alternatives: string[] = [];
  const withFraction = (int: bigint, fraction: Fractions | undefined) => {
    if (fraction === undefined) return;
    const whole = literal(int.toString());
    if (fraction.digits === undefined) alternatives.push(whole);
    else if (fraction.empty) alternatives.push(`${whole} ("." ${fraction.digits})?`);
    else alternatives.push(`${whole} "." ${fraction.digits}`);
  };
  if (lo.int === hi.int) {
    withFraction(lo.int, fractions(lo.frac, loStrict, hi.frac, hiStrict, FRACTION_DIGITS));
  } else {
    withFraction(lo.int, fractions(lo.frac, loStrict, undefined, false, FRACTION_DIGITS));
    if (lo.int + 1n <= hi.int - 1n) {
      const middle = naturals(lo.int + 1n, hi.int - 1n);
      alternatives.push(`(${middle.join(" | ")}) ("." [0-9]{1,${FRACTION_DIGITS}})?`);
    }
    withFraction(hi.int, fractions("", false, hi.frac, hiStrict, FRACTION_DIGITS));
  }
  return alternatives.length === 0 ? undefined : alternatives.join(" | ");
}

/** The fraction digit strings (at most `room` digits) allowed: whether none, and the non-empty ones. */
interface Fractions {
  empty: boolean;
  digits: string | undefined;
}

/**
 * Fraction digits F with 0.F ≥ 0.g (> when gStrict) and, when h is given, 0.F ≤ 0.h (< when
 * hStrict), compared digit by digit: a first digit above g's frees the rest from the lower bound, one
 * equal to it carries the bound on to the rest, and likewise below h's.
 */
function fractions(
  g: string,
  gStrict: boolean,
  h: string | undefined,
  hStrict: boolean,
  room: number,
): Fractions | undefined {
  const empty = g === "" && !gStrict && (h === undefined || !(hStrict && h === ""));
  const alternatives: string[] = [];
  if (room > 0) {
    const g0 = Number(g[0] ?? "0");
    const h0 = h === undefined ? undefined : Number(h[0] ?? "0");
    const free: number[] = [];
    for (let d = 0; d <= 9; d++) {
      if (d < g0 || (h0 !== undefined && d > h0)) continue;
      const lowerBinds = d === g0 && (g !== "" || gStrict);
      const upperBinds = h0 !== undefined && d === h0;
      if (!lowerBinds && !upperBinds) {
        free.push(d);
        continue;
      }
      const rest = fractions(
        lowerBinds ? g.slice(1) : "",
        lowerBinds && gStrict,
        upperBinds ? (h as string).slice(1) : undefined,
        upperBinds && hStrict,
        room - 1,
      );
      if (rest === undefined) continue;
      if (rest.empty && rest.digits) alternatives.push(`"${d}" (${rest.digits})?`);
      else if (rest.empty) alternatives.push(`"${d}"`);
      else if (rest.digits) alternatives.push(`"${d}" ${rest.digits}`);
    }
    if (free.length > 0) {
      const digits = free.length === 10 ? "[0-9]" : `[${free.join("")}]`;
      alternatives.unshift(room > 1 ? `${digits} [0-9]{0,${room - 1}}` : digits);
    }
  }
  if (!empty && alternatives.length === 0) return undefined;
  return { empty, digits: alternatives.length === 0 ? undefined : `(${alternatives.join(" | ")})` };
}

/** |x| as an exact decimal (from its shortest round-trip text, exponent forms included). */
function decimal(x: number): Decimal {
  const m = /^(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(String(Math.abs(x)));
  if (!m) throw new Error(`not a finite number: ${x}`);
  const digits = (m[1] as string) + (m[2] ?? "");
  const point = (m[1] as string).length + Number(m[3] ?? "0");
  const padded = point <= 0 ? "0".repeat(1 - point) + digits : digits.padEnd(point, "0");
  const at = Math.max(point, 1);
  return { int: BigInt(padded.slice(0, at)), frac: padded.slice(at).replace(/0+$/, "") };
}
