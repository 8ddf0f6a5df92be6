import { describe, expect, it } from "vitest";
import { Xoshiro128 } from "../synth/random.js";
import {
  affineCodes,
  bfloat16Bits,
  bfloat16Value,
  dequantizeAffine,
  encodeFloats,
  quantizeAffine,
  roundToDtype,
} from "./quantize.js";

/*
 * The fixtures below follow MLX's CPU kernel (mlx/backend/cpu/quantized.cpp, `quantize`), worked by
 * hand. For a group with minimum `min` and maximum `max`, n = 2^bits - 1:
 *   scale = max((max - min) / n, 1e-7); negated unless |min| > |max|
 *   edge = |min| > |max| ? min : max;  q0 = rint(edge / scale)
 *   q0 != 0: scale = edge / q0, bias = edge;  else bias = 0
 *   code = clamp(rint((w - bias) / scale), 0, n), rint rounding halves to even
 * Codes pack from the low bits: element j of a word at bit (j mod (32 / bits)) * bits.
 */

const bits16 = (values: Float32Array) => [...values].map(bfloat16Bits);

describe("bfloat16 as MLX converts", () => {
  it("rounds to nearest even and keeps NaN a quiet NaN", () => {
    expect(bfloat16Bits(1)).toBe(0x3f80);
    expect(bfloat16Bits(-2)).toBe(0xc000);
    expect(bfloat16Bits(1 + 2 ** -8)).toBe(0x3f80); // halfway: to the even 1.0
    expect(bfloat16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // halfway: to the even 1 + 2^-6
    expect(bfloat16Bits(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81);
    expect(bfloat16Bits(Number.NaN)).toBe(0x7fc0);
    expect(bfloat16Value(0x3d80)).toBe(0.0625);
    expect(roundToDtype(0.1, "float16")).toBe(0.0999755859375);
    expect([...encodeFloats([1, -2], "bfloat16")]).toEqual([0x80, 0x3f, 0x00, 0xc0]);
  });
});

describe("quantizeAffine, by MLX's rule", () => {
  it("4 bits, |min| > |max|: positive scale, bias = min, halves to even, the top code clamped", () => {
    // w = j - 16: min -16, max 15. scale = 31/15 = 2.0667; q0 = rint(-16 / 2.0667) = rint(-7.74) = -8;
    // scale = -16 / -8 = 2, bias = -16; code = rint(j / 2): 0.5 → 0, 1.5 → 2, 2.5 → 2, 15.5 → 16 → 15.
    const w = Float32Array.from({ length: 32 }, (_, j) => j - 16);
    const q = quantizeAffine(w, 1, 32, { bits: 4, groupSize: 32 });
    expect([...affineCodes(q)]).toEqual([
      0, 0, 1, 2, 2, 2, 3, 4, 4, 4, 5, 6, 6, 6, 7, 8, 8, 8, 9, 10, 10, 10, 11, 12, 12, 12, 13, 14, 14, 14, 15,
      15,
    ]);
    expect([...q.weight]).toEqual([0x43222100, 0x87666544, 0xcbaaa988, 0xffeeedcc]);
    expect([...q.scales]).toEqual([2]);
    expect([...q.biases]).toEqual([-16]);
    expect(bits16(q.scales)).toEqual([0x4000]);
    expect(bits16(q.biases)).toEqual([0xc180]);
    expect([...dequantizeAffine(q)]).toEqual([...affineCodes(q)].map((c) => c * 2 - 16));
  });

  it("4 bits, |max| >= |min|: the scale is negative and the bias is max (not min)", () => {
    // w = j mod 16: min 0, max 15. scale = -(15/15) = -1; q0 = rint(15 / -1) = -15; scale = 15 / -15 = -1,
    // bias = 15; code = rint((w - 15) / -1) = 15 - w. (scale = 1, bias = min would give code = w.)
    const w = Float32Array.from({ length: 32 }, (_, j) => j % 16);
    const q = quantizeAffine(w, 1, 32, { bits: 4, groupSize: 32 });
    expect([...q.weight]).toEqual([0x89abcdef, 0x01234567, 0x89abcdef, 0x01234567]);
    expect(bits16(q.scales)).toEqual([0xbf80]);
    expect(bits16(q.biases)).toEqual([0x4170]);
    expect([...dequantizeAffine(q)]).toEqual([...w]);
  });

  it("4 bits: an edge that rounds up clamps the far end beyond scale/2", () => {
    // w = [-1, 0.99, 0 × 30]: scale = 1.99/15 = 0.13267; q0 = rint(-1 / 0.13267) = rint(-7.54) = -8;
    // scale = 0.125, bias = -1; 0.99 → rint(1.99 / 0.125) = rint(15.92) = 16 → 15 (0.875: off by 0.115);
    // 0 → 8.
    const w = new Float32Array(32);
    w[0] = -1;
    w[1] = 0.99;
    const q = quantizeAffine(w, 1, 32, { bits: 4, groupSize: 32 });
    expect([...q.weight]).toEqual([0x888888f0, 0x88888888, 0x88888888, 0x88888888]);
    expect(bits16(q.scales)).toEqual([0x3e00]);
    expect(bits16(q.biases)).toEqual([0xbf80]);
    expect(dequantizeAffine(q)[1]).toBe(0.875);
  });

  it("8 bits: one code per byte, halves to even", () => {
    // s = 1/16; w_0 = -8, w_1..3 = -8 + {0.5, 1.5, 2.5}s, w_j = -8 + 8js (j = 4..30), w_31 = 7.9375 = -8 + 255s.
    // scale = 15.9375/255 = 0.0625; q0 = rint(-8 / 0.0625) = -128; scale = 0.0625, bias = -8;
    // codes 0, 0 (0.5), 2 (1.5), 2 (2.5), 8j, 255.
    const s = 1 / 16;
    const w = Float32Array.from({ length: 32 }, (_, j) =>
      j === 31 ? 7.9375 : j === 0 ? -8 : j < 4 ? -8 + (j - 0.5) * s : -8 + 8 * j * s,
    );
    const q = quantizeAffine(w, 1, 32, { bits: 8, groupSize: 32 });
    expect([...q.weight]).toEqual([
      0x02020000, 0x38302820, 0x58504840, 0x78706860, 0x98908880, 0xb8b0a8a0, 0xd8d0c8c0, 0xfff0e8e0,
    ]);
    expect(bits16(q.scales)).toEqual([0x3d80]);
    expect(bits16(q.biases)).toEqual([0xc100]);
  });

  it("an all-zero group: scale -1e-7 (the epsilon, negated), bias 0, codes 0", () => {
    const q = quantizeAffine(new Float32Array(64), 1, 64, { bits: 4 });
    expect([...q.weight]).toEqual(new Array(8).fill(0));
    expect(bits16(q.scales)).toEqual([0xb3d7]); // float32 1e-7 is 0x33d6bf95, rounded up
    expect([...q.biases]).toEqual([0]);
  });

  it("lays out rows and groups row-major: [rows, cols*bits/32] words, [rows, cols/group] scales", () => {
    const a = Float32Array.from({ length: 32 }, (_, j) => j - 16);
    const b = Float32Array.from({ length: 32 }, (_, j) => j % 16);
    const w = new Float32Array(128);
    w.set(a, 0);
    w.set(b, 32);
    w.set(b, 64);
    w.set(a, 96);
    const q = quantizeAffine(w, 2, 64, { bits: 4, groupSize: 32 });
    expect(q.weight.length).toBe(2 * 8);
    expect([...q.weight.subarray(0, 4)]).toEqual([0x43222100, 0x87666544, 0xcbaaa988, 0xffeeedcc]);
    expect([...q.weight.subarray(4, 8)]).toEqual([0x89abcdef, 0x01234567, 0x89abcdef, 0x01234567]);
    expect([...q.scales]).toEqual([2, -1, -1, 2]);
    expect([...q.biases]).toEqual([-16, 15, 15, -16]);
  });

  it("refuses what MLX refuses", () => {
    expect(() => quantizeAffine(new Float32Array(96), 1, 96, { bits: 4 })).toThrow(
      /not a multiple of the group size 64/,
    );
    expect(() => quantizeAffine(new Float32Array(64), 1, 64, { bits: 3 as 4 })).toThrow(/unsupported bits 3/);
    expect(() => quantizeAffine(new Float32Array(64), 1, 64, { bits: 4, groupSize: 16 as 32 })).toThrow(
      /group size 16/,
    );
    expect(() => quantizeAffine(new Float32Array(64), 2, 64, { bits: 4 })).toThrow(/cannot hold 64 elements/);
  });
});

describe("dequantizeAffine(quantizeAffine(w))", () => {
  const random = (n: number, seed: number) => {
    const rng = new Xoshiro128(seed);
    // Mixed scales, signs and offsets, so that every branch of the rule is taken.
    return Float32Array.from({ length: n }, (_, i) => {
      const u = rng.next() / 2 ** 32 - 0.5;
      return Math.fround(u * 2 ** (((i >> 6) % 7) - 3) + (((i >> 7) % 3) - 1) * 0.1);
    });
  };

  it.each([2, 4, 8] as const)(
    "stays within scale/2 per element at %i bits, scale at the clamped top code",
    (bits) => {
      const rows = 16;
      const cols = 512;
      const w = random(rows * cols, bits);
      const q = quantizeAffine(w, rows, cols, { bits, groupSize: 64, dtype: "float32" });
      const back = dequantizeAffine(q);
      const codes = affineCodes(q);
      for (let i = 0; i < w.length; i++) {
        const g = Math.floor(i / 64);
        const scale = Math.abs(q.scales[g]!);
        const slack = 1e-6 * (Math.abs(w[i]!) + Math.abs(q.biases[g]!) + scale);
        // The rule moves the edge's scale so that 0 is exact: the far end may land past the top code.
        const bound = codes[i] === 2 ** bits - 1 ? scale : scale / 2;
        expect(Math.abs(back[i]! - w[i]!)).toBeLessThanOrEqual(bound + slack);
      }
    },
  );

  it("adds at most bfloat16's rounding of scale and bias when they are stored in bfloat16", () => {
    const w = random(16 * 512, 9);
    for (const bits of [4, 8] as const) {
      const n = 2 ** bits - 1;
      const q = quantizeAffine(w, 16, 512, { bits, groupSize: 64 });
      const back = dequantizeAffine(q);
      for (let i = 0; i < w.length; i++) {
        const g = Math.floor(i / 64);
        const scale = Math.abs(q.scales[g]!);
        const bound = scale + (n * scale + 2 * Math.abs(q.biases[g]!) + Math.abs(w[i]!)) * 2 ** -8;
        expect(Math.abs(back[i]! - w[i]!)).toBeLessThanOrEqual(bound);
      }
    }
  });
});
