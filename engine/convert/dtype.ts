// 16-bit float <-> fp32 conversion of whole arrays: bf16 (bfloat16) and f16 (IEEE binary16).
// Narrowing rounds to nearest, ties to even; subnormals, infinities and NaN are handled exactly.
// All loops work on the integer bit patterns (never through JS numbers), so NaN payloads and signed
// zeros survive. Typed arrays use the platform's byte order; every platform we run on (x86, ARM, WASM)
// is little-endian, which is also the order of safetensors files.

/** Integer view of a Float32Array's bits (no copy). */
function bitsOf(f: Float32Array): Int32Array {
  return new Int32Array(f.buffer, f.byteOffset, f.length);
}

function checkLength(what: string, src: { length: number }, dst: { length: number }): void {
  if (dst.length < src.length)
    throw new RangeError(`${what}: destination holds ${dst.length} values, need ${src.length}`);
}

// ---------------------------------------------------------------- bf16

/** Widen bf16 bit patterns to fp32 (exact). */
export function bf16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  checkLength('bf16ToF32', src, dst);
  const o = bitsOf(dst);
  const n = src.length;
  for (let i = 0; i < n; i++) o[i] = src[i]! << 16;
  return dst;
}

/** Narrow fp32 to bf16 bit patterns, round to nearest even; NaN stays NaN (quietened), overflow goes to inf. */
export function f32ToBf16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkLength('f32ToBf16', src, dst);
  const s = bitsOf(src);
  const n = src.length;
  for (let i = 0; i < n; i++) {
    const x = s[i]!;
    // a NaN must not round into inf: keep the sign and the top payload bits and set the quiet bit
    dst[i] = (x & 0x7fffffff) > 0x7f800000 ? (x >>> 16) | 0x40 : (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return dst;
}

/** Round fp32 values to the nearest bf16 value, in place (what storing as bf16 and reading back gives). */
export function roundToBf16(data: Float32Array): Float32Array {
  const s = bitsOf(data);
  const n = data.length;
  for (let i = 0; i < n; i++) {
    const x = s[i]!;
    s[i] = (x & 0x7fffffff) > 0x7f800000 ? (x & 0xffff0000) | 0x400000 : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) << 16;
  }
  return data;
}

/** One bf16 bit pattern as a number. */
export function bf16BitsToNumber(h: number): number {
  SCALAR_I32[0] = (h & 0xffff) << 16;
  return SCALAR_F32[0]!;
}

/** One number rounded to a bf16 bit pattern (the number is first rounded to fp32). */
export function numberToBf16Bits(x: number): number {
  SCALAR_F32[0] = x;
  const b = SCALAR_I32[0]!;
  return ((b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

// ---------------------------------------------------------------- f16

const SCALAR_F32 = new Float32Array(1);
const SCALAR_I32 = new Int32Array(SCALAR_F32.buffer);

/** fp32 bits of one f16 bit pattern (exact). */
function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return sign | 0x7f800000 | (mant << 13); // inf, NaN (payload kept)
  if (exp !== 0) return sign | ((exp + 112) << 23) | (mant << 13); // normal: rebias 15 -> 127
  if (mant === 0) return sign; // signed zero
  // subnormal: value = mant * 2^-24; normalise so the leading 1 becomes the implicit bit
  let e = 113; // biased fp32 exponent of 2^-14, the f16 subnormal scale
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    e--;
  }
  return sign | (e << 23) | ((mant & 0x3ff) << 13);
}

let f16Table: Int32Array | null = null;

/** All 65536 f16 -> fp32 bit patterns (256 KiB, built on first use). */
function f16ToF32Table(): Int32Array {
  if (f16Table === null) {
    f16Table = new Int32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32Bits(h);
  }
  return f16Table;
}

/** fp32 bits -> f16 bits, round to nearest even. */
function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const a = x & 0x7fffffff;
  if (a >= 0x47800000) {
    // |x| >= 65536 (rounds to inf whatever the mantissa), inf or NaN
    if (a > 0x7f800000) return sign | 0x7e00 | ((a >>> 13) & 0x3ff); // quiet NaN, top payload bits
    return sign | 0x7c00;
  }
  if (a < 0x38800000) {
    // below the smallest normal f16 (2^-14): the result is subnormal or zero
    if (a < 0x33000000) return sign; // < 2^-25: rounds to zero (2^-25 itself is the tie, handled below)
    const e = a >>> 23; // 102..112
    const m = (a & 0x7fffff) | 0x800000; // 24-bit significand
    const shift = 126 - e; // value in units of 2^-24 is m >> shift; shift in 14..24
    const q = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    return sign | (rem > half || (rem === half && (q & 1) === 1) ? q + 1 : q);
  }
  // normal: rebias the exponent, drop 13 mantissa bits with rounding; a carry out of the mantissa
  // bumps the exponent, which is exactly right (up to 0x7c00 = inf for values >= 65520)
  const r = a - 0x38000000; // exponent rebiased from 127 to 15 (still in fp32 bit positions)
  return sign | ((r + 0xfff + ((r >>> 13) & 1)) >>> 13);
}

/** Widen f16 bit patterns to fp32 (exact). */
export function f16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  checkLength('f16ToF32', src, dst);
  const t = f16ToF32Table();
  const o = bitsOf(dst);
  const n = src.length;
  for (let i = 0; i < n; i++) o[i] = t[src[i]!]!;
  return dst;
}

/** Narrow fp32 to f16 bit patterns, round to nearest even; overflow to inf, tiny values to subnormals/zero. */
export function f32ToF16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkLength('f32ToF16', src, dst);
  const s = bitsOf(src);
  const n = src.length;
  for (let i = 0; i < n; i++) {
    const x = s[i]!;
    const a = x & 0x7fffffff;
    // the common case (normal f16 range) inline; the rest in the helper
    if (a >= 0x38800000 && a < 0x47800000) {
      const r = a - 0x38000000;
      dst[i] = ((x >>> 16) & 0x8000) | ((r + 0xfff + ((r >>> 13) & 1)) >>> 13);
    } else dst[i] = f32BitsToF16Bits(x);
  }
  return dst;
}

/** One f16 bit pattern as a number. */
export function f16BitsToNumber(h: number): number {
  SCALAR_I32[0] = f16BitsToF32Bits(h & 0xffff);
  return SCALAR_F32[0]!;
}

/** One number rounded to an f16 bit pattern (the number is first rounded to fp32). */
export function numberToF16Bits(x: number): number {
  SCALAR_F32[0] = x;
  return f32BitsToF16Bits(SCALAR_I32[0]!);
}
