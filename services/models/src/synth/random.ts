/** Small, fast, seeded randomness for weight synthesis (xoshiro128**), and float → half conversion. */

/** FNV-1a over a string's UTF-16 code units: a stable 32-bit hash for deriving per-tensor seeds. */
export function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** xoshiro128** seeded through splitmix32; `next()` returns a uniform u32. */
export class Xoshiro128 {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, stream = 0) {
    let s = (seed ^ Math.imul(stream, 0x9e3779b9)) >>> 0;
    const splitmix = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = splitmix();
    this.b = splitmix();
    this.c = splitmix();
    this.d = splitmix();
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  next(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9);
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result >>> 0;
  }

  /** Fills `out[start, end)` with uniform random bytes. */
  fillBytes(out: Uint8Array, start: number, end: number): void {
    let i = start;
    const end4 = end - ((end - start) & 3);
    while (i < end4) {
      const r = this.next();
      out[i] = r & 0xff;
      out[i + 1] = (r >>> 8) & 0xff;
      out[i + 2] = (r >>> 16) & 0xff;
      out[i + 3] = r >>> 24;
      i += 4;
    }
    if (i < end) {
      let r = this.next();
      while (i < end) {
        out[i++] = r & 0xff;
        r >>>= 8;
      }
    }
  }
}

/** Standard deviation of a uniform int8 in [-128, 127]. */
export const INT8_STD = Math.sqrt((256 * 256 - 1) / 12);

/**
 * The value each random byte stands for in an unquantized weight of standard deviation `std`: the
 * byte read as an int8, times a step. The GGUF synthesizer's F32/F16 tensors and the MLX checkpoints
 * (before rounding and quantizing) hold these values, so both formats carry the same weights.
 */
export function int8WeightValues(std: number): Float64Array {
  const step = std / INT8_STD;
  const table = new Float64Array(256);
  for (let b = 0; b < 256; b++) table[b] = (b < 128 ? b : b - 256) * step;
  return table;
}

/** A tensor's random stream, keyed by its GGUF name (whatever format the tensor is written in). */
export function tensorStream(seed: number, ggufName: string): Xoshiro128 {
  return new Xoshiro128(seed, fnv1a32(ggufName));
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE-754 binary16 bits of a number (round to nearest even; overflow to infinity). */
export function float16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1) === 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++;
  e = half; // may carry into the exponent, which is the correct rounding
  return sign | e;
}

/** The number a binary16 bit pattern denotes. */
export function float16Value(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
