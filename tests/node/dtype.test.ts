import { describe, expect, it } from 'vitest';
import {
  bf16BitsToNumber,
  bf16ToF32,
  f16BitsToNumber,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  numberToBf16Bits,
  numberToF16Bits,
  roundToBf16,
} from '../../engine/convert/dtype.js';

// ---------------------------------------------------------------- slow references (plain arithmetic)

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const f32FromBits = (b: number): number => {
  u32[0] = b >>> 0;
  return f32[0]!;
};
const bitsFromF32 = (x: number): number => {
  f32[0] = x;
  return u32[0]!;
};

/** f16 value from its fields, by arithmetic. */
function refF16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  if (exp === 0) return sign * mant * 2 ** -24;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** bf16 value from its fields, by arithmetic. */
function refBf16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 7) & 0xff;
  const mant = h & 0x7f;
  if (exp === 0xff) return mant === 0 ? sign * Infinity : NaN;
  if (exp === 0) return sign * mant * 2 ** -133;
  return sign * (1 + mant / 128) * 2 ** (exp - 127);
}

/**
 * Round |x| to the nearest of the non-negative finite values of a 16-bit format (ascending, index = bits),
 * ties to the even pattern, with "inf" as the virtual next value one ulp above the largest finite one.
 */
function refNearest(values: number[], infBits: number, x: number): number {
  if (Number.isNaN(x)) return -1;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | infBits;
  let lo = 0;
  let hi = values.length - 1;
  if (a >= values[hi]!) {
    const top = values[hi]!;
    const ulp = top - values[hi - 1]!;
    const inf = top + ulp;
    if (a < top + ulp / 2) return sign | hi;
    if (a > top + ulp / 2 || a >= inf) return sign | infBits;
    return sign | ((hi & 1) === 0 ? hi : infBits); // tie: the even pattern (inf has an even mantissa)
  }
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (values[mid]! <= a) lo = mid;
    else hi = mid;
  }
  const dlo = a - values[lo]!;
  const dhi = values[hi]! - a;
  if (dlo < dhi) return sign | lo;
  if (dhi < dlo) return sign | hi;
  return sign | ((lo & 1) === 0 ? lo : hi);
}

const F16_VALUES = Array.from({ length: 0x7c00 }, (_, h) => refF16Value(h));
const BF16_VALUES = Array.from({ length: 0x7f80 }, (_, h) => refBf16Value(h));

const refF32ToF16 = (bits: number): number => refNearest(F16_VALUES, 0x7c00, f32FromBits(bits));
const refF32ToBf16 = (bits: number): number => refNearest(BF16_VALUES, 0x7f80, f32FromBits(bits));

const isF16NaN = (h: number): boolean => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
const isBf16NaN = (h: number): boolean => (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;

/** Inputs whose narrowing differs from the reference (NaN must stay NaN with its sign), at most 20. */
function mismatches(
  bits: Uint32Array,
  got: Uint16Array,
  ref: (bits: number) => number,
  isNaN16: (h: number) => boolean,
): string[] {
  const bad: string[] = [];
  for (let i = 0; i < bits.length && bad.length < 20; i++) {
    const want = ref(bits[i]!);
    const ok = want === -1 ? isNaN16(got[i]!) && (got[i]! & 0x8000) === ((bits[i]! >>> 16) & 0x8000) : got[i] === want;
    if (!ok) bad.push(`${bits[i]!.toString(16)} -> ${got[i]!.toString(16)} (want ${want.toString(16)})`);
  }
  return bad;
}

/** Edge cases around every boundary of both formats, plus random bit patterns. */
function testBits(): Uint32Array {
  const out: number[] = [
    0,
    0x80000000,
    0x7f800000,
    0xff800000, // zeros, infinities
    0x7fc00000,
    0xffc00000,
    0x7f800001,
    0xff800001,
    0x7fbfffff,
    0x7f80ffff,
    0x7f810000, // NaNs, incl. low payloads
    0x7f7fffff,
    0xff7fffff,
    0x7f7f8000,
    0x7f7f7fff,
    0x7f7f8001, // largest f32, bf16 overflow tie region
    0x00000001,
    0x80000001,
    0x007fffff,
    0x00800000,
    0x00008000,
    0x00018000,
    0x00010000, // f32 subnormals
  ];
  // f16 boundaries: 65504 (max), 65520 (tie to inf), 2^-14 (min normal), 2^-24 (min subnormal), 2^-25 (tie to 0)
  for (const v of [65504, 65519, 65520, 65535, 65536, 2 ** -14, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 1.5 * 2 ** -24])
    for (const d of [-2, -1, 0, 1, 2]) {
      out.push(bitsFromF32(v) + d, (bitsFromF32(v) + d) | 0x80000000);
    }
  // exact ties and near-ties at every exponent of both formats
  for (let e = 0; e < 255; e++)
    for (const m of [0x1000, 0x3000, 0x0fff, 0x1001, 0x8000, 0x18000, 0x7fff, 0x8001, 0x7fe000, 0x7ff000, 0x7fffff])
      out.push((e << 23) | m, ((e << 23) | m | 0x80000000) >>> 0);
  // random patterns (fixed LCG so failures reproduce)
  let s = 12345;
  for (let i = 0; i < 400_000; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(s);
  }
  return Uint32Array.from(out, (b) => b >>> 0);
}

describe('bf16', () => {
  it('widens every bf16 pattern exactly', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const wide = bf16ToF32(all);
    const bits = new Uint32Array(wide.buffer);
    const bad: string[] = [];
    for (let h = 0; h < 65536; h++) {
      const ref = refBf16Value(h);
      if (bits[h] !== (h << 16) >>> 0 || (Number.isNaN(ref) ? !Number.isNaN(wide[h]) : !Object.is(wide[h], ref)))
        bad.push(`${h.toString(16)} -> ${wide[h]}`);
    }
    expect(bad).toEqual([]);
  });

  it('round-trips every non-NaN bf16 pattern', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const back = f32ToBf16(bf16ToF32(all));
    const bad: string[] = [];
    for (let h = 0; h < 65536; h++)
      if (isBf16NaN(h) ? !isBf16NaN(back[h]!) : back[h] !== h)
        bad.push(`${h.toString(16)} -> ${back[h]!.toString(16)}`);
    expect(bad).toEqual([]);
  });

  it('narrows with round-to-nearest-even, as the slow reference does', () => {
    const bits = testBits();
    const src = new Float32Array(bits.buffer);
    const got = f32ToBf16(src);
    expect(mismatches(bits, got, refF32ToBf16, isBf16NaN)).toEqual([]);
  });

  it('rounds in place to the widened narrow value, and the scalar helpers agree', () => {
    const bits = testBits();
    const src = new Float32Array(bits.buffer);
    const viaNarrow = bf16ToF32(f32ToBf16(src));
    const rounded = roundToBf16(src.slice());
    const a = new Uint32Array(viaNarrow.buffer);
    const b = new Uint32Array(rounded.buffer);
    const bad: string[] = [];
    for (let i = 0; i < bits.length; i++)
      if (a[i] !== b[i]) bad.push(`${bits[i]!.toString(16)}: ${b[i]!.toString(16)}`);
    expect(bad).toEqual([]);
    for (const x of [0, -0, 1, -1.00390625, 1.00390625, 3.14159, 1e-40, 3.4e38, 3.4e39, Infinity, -Infinity]) {
      expect(numberToBf16Bits(x)).toBe(refF32ToBf16(bitsFromF32(x)));
      expect(Object.is(bf16BitsToNumber(numberToBf16Bits(x)), refBf16Value(numberToBf16Bits(x)))).toBe(true);
    }
    expect(isBf16NaN(numberToBf16Bits(NaN))).toBe(true);
  });

  it('keeps signed zero, infinities and turns every NaN into a NaN (never inf)', () => {
    const x = new Float32Array(new Uint32Array([0x80000000, 0x7f800000, 0xff800000, 0x7f800001, 0xff800001]).buffer);
    expect(Array.from(f32ToBf16(x))).toEqual([0x8000, 0x7f80, 0xff80, 0x7fc0, 0xffc0]);
  });
});

describe('f16', () => {
  it('widens every f16 pattern exactly (NaN payloads kept)', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const wide = f16ToF32(all);
    const bits = new Uint32Array(wide.buffer);
    const bad: string[] = [];
    for (let h = 0; h < 65536; h++) {
      const ref = refF16Value(h);
      const ok = Number.isNaN(ref)
        ? bits[h] === (((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13)) >>> 0
        : Object.is(wide[h], ref);
      if (!ok) bad.push(`${h.toString(16)} -> ${wide[h]} (want ${ref})`);
    }
    expect(bad).toEqual([]);
  });

  it('round-trips every non-NaN f16 pattern', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const back = f32ToF16(f16ToF32(all));
    const bad: string[] = [];
    for (let h = 0; h < 65536; h++)
      if (isF16NaN(h) ? !isF16NaN(back[h]!) : back[h] !== h) bad.push(`${h.toString(16)} -> ${back[h]!.toString(16)}`);
    expect(bad).toEqual([]);
  });

  it('narrows with round-to-nearest-even incl. subnormals and overflow, as the slow reference does', () => {
    const bits = testBits();
    const got = f32ToF16(new Float32Array(bits.buffer));
    expect(mismatches(bits, got, refF32ToF16, isF16NaN)).toEqual([]);
  });

  it('handles the documented boundaries', () => {
    const cases: [number, number][] = [
      [65504, 0x7bff],
      [65519, 0x7bff],
      [65520, 0x7c00], // tie between 65504 (odd) and 65536 (inf): to even = inf
      [-70000, 0xfc00],
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000], // tie between 0 and 2^-24: to even = 0
      [3 * 2 ** -25, 0x0002], // tie between 1 and 2 subnormal ulps: to even = 2
      [2 ** -14, 0x0400],
      [2 ** -14 - 2 ** -25, 0x0400], // tie between 0x3ff (odd) and 0x400: to even
      [-0, 0x8000],
      [1 + 2 ** -11, 0x3c00], // tie at 1.0: to even
      [1 + 3 * 2 ** -11, 0x3c02],
    ];
    for (const [x, h] of cases) expect(numberToF16Bits(x), String(x)).toBe(h);
    expect(f16BitsToNumber(0x7bff)).toBe(65504);
    expect(f16BitsToNumber(0x0001)).toBe(2 ** -24);
    expect(isF16NaN(numberToF16Bits(NaN))).toBe(true);
    expect(numberToF16Bits(Infinity)).toBe(0x7c00);
  });

  it('writes into a given destination and rejects a short one', () => {
    const src = new Float32Array([1, 2, 3]);
    const dst = new Uint16Array(5);
    expect(f32ToF16(src, dst)).toBe(dst);
    expect(Array.from(dst)).toEqual([0x3c00, 0x4000, 0x4200, 0, 0]);
    expect(() => f32ToF16(src, new Uint16Array(2))).toThrow(RangeError);
    expect(() => bf16ToF32(new Uint16Array(4), new Float32Array(3))).toThrow(RangeError);
  });
});
