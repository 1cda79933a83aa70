// Weight quantisation for storage and execution: int8 with one scale per output channel, and 4-bit blocks
// (block size 32 along the input dimension) laid out exactly as ONNX Runtime's MatMulNBits reads them.
//
// A linear weight is [out, in] (rows = output channels, as in the checkpoint). Scales are fp32 and the
// quantiser rounds with the stored (fp32) scale, so the error bounds below hold for what is dequantised:
//   int8: w ~ q * s[row], q in [-127, 127], s = max|w_row| / 127:            |w - q s| <= s / 2
//   q4:   w ~ (q - zp) * s[row, block], q, zp in [0, 15], s = range / 15:    |w - (q - zp) s| <= s / 2
// where a q4 block's range is max(0, max w) - min(0, min w) over its (up to) 32 values.

/** The weight formats of a converted model: fp32, f16 storage, int8 and 4-bit blocks; see GraphOptions.dtype. */
export const MODEL_DTYPES = ['f32', 'f16', 'int8', 'q4'] as const;
export type ModelDtype = (typeof MODEL_DTYPES)[number];
export const isModelDtype = (s: string): s is ModelDtype => (MODEL_DTYPES as readonly string[]).includes(s);

/** int8 weight, one scale per output channel (row). */
export interface Int8Weight {
  rows: number;
  cols: number;
  /** [rows, cols] row-major */
  data: Int8Array;
  /** [rows]; 0 for a row of zeros */
  scales: Float32Array;
}

/** 4-bit block-quantised weight in MatMulNBits' layout (bits = 4, N = rows, K = cols). */
export interface Q4Weight {
  rows: number;
  cols: number;
  blockSize: number;
  /** k_blocks = ceil(cols / blockSize) */
  blocksPerRow: number;
  /** B: [rows, blocksPerRow, blockSize / 2] uint8; two codes a byte along K, the first in the low nibble */
  data: Uint8Array;
  /** [rows, blocksPerRow] fp32 */
  scales: Float32Array;
  /** [rows, ceil(blocksPerRow / 2)] uint8; two zero points a byte along the blocks, the first in the low nibble */
  zeroPoints: Uint8Array;
}

export const Q4_BLOCK = 32;
const INT8_MAX = 127;
const Q4_MAX = 15;
/** The code of a zero in an all-zero block and of the padding past K: (8 - 8) * s = 0. */
const Q4_NEUTRAL = 8;

function checkShape(what: string, w: Float32Array, rows: number, cols: number): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 1 || cols < 1 || w.length !== rows * cols)
    throw new RangeError(`${what}: ${w.length} values do not make a [${rows}, ${cols}] matrix`);
}

/** Round to the nearest integer, ties to even (as ONNX Round does). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function nonFinite(what: string, row: number): Error {
  return new RangeError(`${what}: row ${row} holds a value that is not finite`);
}

// ---------------------------------------------------------------- int8

/** Quantise a [rows, cols] weight to int8 with one symmetric scale per row (output channel). */
export function quantizeInt8(w: Float32Array, rows: number, cols: number): Int8Weight {
  checkShape('quantizeInt8', w, rows, cols);
  const data = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let absMax = 0;
    for (let c = 0; c < cols; c++) {
      const a = Math.abs(w[o + c]!);
      if (!Number.isFinite(a)) throw nonFinite('quantizeInt8', r);
      if (a > absMax) absMax = a;
    }
    const s = Math.fround(absMax / INT8_MAX);
    scales[r] = s;
    if (s === 0) continue; // zeros (or values so small that their scale underflows): all codes 0
    for (let c = 0; c < cols; c++) {
      const q = roundHalfEven(w[o + c]! / s);
      data[o + c] = q > INT8_MAX ? INT8_MAX : q < -INT8_MAX ? -INT8_MAX : q;
    }
  }
  return { rows, cols, data, scales };
}

/** The fp32 values an int8 weight stands for, [rows, cols]. */
export function dequantizeInt8(q: Int8Weight): Float32Array {
  const out = new Float32Array(q.rows * q.cols);
  for (let r = 0; r < q.rows; r++) {
    const s = q.scales[r]!;
    const o = r * q.cols;
    for (let c = 0; c < q.cols; c++) out[o + c] = q.data[o + c]! * s;
  }
  return out;
}

/** The int8 codes transposed to [cols, rows]: B of a MatMul y = x B with per-column scales. */
export function transposeInt8(q: Int8Weight): Int8Array {
  const { rows, cols, data } = q;
  const out = new Int8Array(rows * cols);
  const tile = 64; // tiles keep both sides in cache for large matrices
  for (let r0 = 0; r0 < rows; r0 += tile)
    for (let c0 = 0; c0 < cols; c0 += tile) {
      const r1 = Math.min(rows, r0 + tile);
      const c1 = Math.min(cols, c0 + tile);
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) out[c * rows + r] = data[r * cols + c]!;
    }
  return out;
}

// ---------------------------------------------------------------- 4-bit blocks

/** Quantise a [rows, cols] weight to asymmetric 4-bit blocks of `blockSize` values along each row. */
export function quantizeQ4(w: Float32Array, rows: number, cols: number, blockSize = Q4_BLOCK): Q4Weight {
  checkShape('quantizeQ4', w, rows, cols);
  if (!Number.isInteger(blockSize) || blockSize < 16 || (blockSize & (blockSize - 1)) !== 0)
    throw new RangeError(`quantizeQ4: block size must be a power of two >= 16, got ${blockSize}`);
  const blocksPerRow = Math.ceil(cols / blockSize);
  const blob = blockSize / 2;
  const zpPerRow = Math.ceil(blocksPerRow / 2);
  const data = new Uint8Array(rows * blocksPerRow * blob);
  const scales = new Float32Array(rows * blocksPerRow);
  const zeroPoints = new Uint8Array(rows * zpPerRow);
  const codes = new Uint8Array(blockSize);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < blocksPerRow; k++) {
      const begin = r * cols + k * blockSize;
      const n = Math.min(blockSize, cols - k * blockSize);
      let lo = 0;
      let hi = 0;
      for (let j = 0; j < n; j++) {
        const v = w[begin + j]!;
        if (!Number.isFinite(v)) throw nonFinite('quantizeQ4', r);
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const s = Math.fround((hi - lo) / Q4_MAX);
      let zp = Q4_NEUTRAL;
      codes.fill(Q4_NEUTRAL);
      if (s > 0) {
        zp = Math.min(Q4_MAX, Math.max(0, roundHalfEven(-lo / s)));
        for (let j = 0; j < n; j++) codes[j] = Math.min(Q4_MAX, Math.max(0, roundHalfEven(w[begin + j]! / s) + zp));
        codes.fill(zp, n); // padding past K dequantises to 0
      }
      scales[r * blocksPerRow + k] = s;
      const zpAt = r * zpPerRow + (k >> 1);
      zeroPoints[zpAt] = (k & 1) === 0 ? zp : zeroPoints[zpAt]! | (zp << 4);
      const o = (r * blocksPerRow + k) * blob;
      for (let j = 0; j < blob; j++) data[o + j] = codes[2 * j]! | (codes[2 * j + 1]! << 4);
    }
  }
  return { rows, cols, blockSize, blocksPerRow, data, scales, zeroPoints };
}

/** The 4-bit code of element (r, c). */
export function q4Code(q: Q4Weight, r: number, c: number): number {
  const k = Math.floor(c / q.blockSize);
  const j = c - k * q.blockSize;
  const byte = q.data[(r * q.blocksPerRow + k) * (q.blockSize / 2) + (j >> 1)]!;
  return (j & 1) === 0 ? byte & 0xf : byte >> 4;
}

/** The zero point of block k of row r. */
export function q4ZeroPoint(q: Q4Weight, r: number, k: number): number {
  const byte = q.zeroPoints[r * Math.ceil(q.blocksPerRow / 2) + (k >> 1)]!;
  return (k & 1) === 0 ? byte & 0xf : byte >> 4;
}

/** The fp32 values a q4 weight stands for, [rows, cols]. */
export function dequantizeQ4(q: Q4Weight): Float32Array {
  const out = new Float32Array(q.rows * q.cols);
  for (let r = 0; r < q.rows; r++)
    for (let k = 0; k < q.blocksPerRow; k++) {
      const s = q.scales[r * q.blocksPerRow + k]!;
      const zp = q4ZeroPoint(q, r, k);
      const end = Math.min(q.cols, (k + 1) * q.blockSize);
      for (let c = k * q.blockSize; c < end; c++) out[r * q.cols + c] = (q4Code(q, r, c) - zp) * s;
    }
  return out;
}

/**
 * The int8 execution form of a q4 weight: its fp32 values requantised with one scale per row. Computed in
 * fp32 exactly as the graph's constant-folded expansion does (onnx/quantized.ts q4ToInt8), so a loader may
 * replace that expansion by this result without changing a bit. Adds at most max|row| / 254 to the q4 error.
 */
export function requantizeQ4ToInt8(q: Q4Weight): Int8Weight {
  const { rows, cols, blocksPerRow: kb, blockSize: bs, data: packed, scales: blockScales } = q;
  const data = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  const row = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    let absMax = 0;
    for (let k = 0; k < kb; k++) {
      const s = blockScales[r * kb + k]!;
      const zp = q4ZeroPoint(q, r, k);
      const c0 = k * bs;
      const n = Math.min(bs, cols - c0);
      const base = (r * kb + k) * (bs >> 1);
      for (let j = 0; j < n; j++) {
        const byte = packed[base + (j >> 1)]!;
        row[c0 + j] = (((j & 1) === 0 ? byte & 0xf : byte >> 4) - zp) * s; // the store rounds to fp32
        const a = Math.abs(row[c0 + j]!);
        if (a > absMax) absMax = a;
      }
    }
    const s = Math.fround(absMax / INT8_MAX);
    scales[r] = s;
    const safe = s === 0 ? 1 : s;
    const o = r * cols;
    for (let c = 0; c < cols; c++) {
      const f = Math.fround(row[c]! / safe);
      let v = Math.round(f);
      if (v - f === 0.5 && (v & 1) !== 0) v--; // ties to even (roundHalfEven, inlined)
      data[o + c] = v > INT8_MAX ? INT8_MAX : v < -INT8_MAX ? -INT8_MAX : v;
    }
  }
  return { rows, cols, data, scales };
}

/** Bytes a quantised weight occupies (codes, scales and zero points). */
export function quantizedBytes(q: Int8Weight | Q4Weight): number {
  if ('zeroPoints' in q) return q.data.byteLength + q.scales.byteLength + q.zeroPoints.byteLength;
  return q.data.byteLength + q.scales.byteLength;
}
