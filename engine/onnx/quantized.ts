// Linear layers over quantised weights (engine/convert/quantize.ts), and how each format executes in ONNX Runtime.
//
// int8 weights are stored transposed ([in, out], B of y = x B) with one fp32 scale per output column.
// q4 weights are stored in MatMulNBits' layout and expanded at session creation: every op between the
// stored initializers and the execution format has constant inputs only, so ORT's constant folding runs it
// once and keeps only its result. Folding holds every fp32 intermediate in the WASM heap, though (30 MB of
// q4 matmul weights of a Hymba-1.5B layer grew the process by 2.6 GB); loaders that care about memory run q4-expand.ts expandQ4Graph first, which stores
// the same int8 result computed in JS.

import type { Int8Weight, Q4Weight } from '../convert/quantize.js';
import { transposeInt8 } from '../convert/quantize.js';
import type { GraphBuilder } from './builder.js';
import { DataType } from './proto.js';

/**
 * How an int8 weight runs:
 * - `dqmm`: com.microsoft DynamicQuantizeMatMul (activations quantised to uint8 per tensor on the fly,
 *   u8 x s8 integer GEMM, per-column weight scales);
 * - `mmi-row`: activations quantised per row (symmetric, zero point 128) in the graph, then
 *   MatMulIntegerToFloat with the weight scales and a per-row rescale;
 * - `fold`: dequantised to fp32 once at session creation (Cast and Mul folded), then an fp32 MatMul:
 *   int8 is only a storage format.
 */
export type Int8Exec = 'dqmm' | 'mmi-row' | 'fold';

/**
 * How a q4 weight runs:
 * - `int8`: expanded to fp32 and requantised to int8 per output column at session creation, then run as
 *   `Int8Exec` says;
 * - `f32`: expanded to fp32 at session creation, then Gemm;
 * - `nbits`: MatMulNBits (ORT's 4-bit kernel; fast natively with accuracy_level 4 and on WebGPU, slow in WASM).
 */
export type Q4Exec = 'int8' | 'f32' | 'nbits';

export interface QuantExec {
  int8: Int8Exec;
  q4: Q4Exec;
}

/**
 * What the converter emits, measured on a Hymba-1.5B layer in ORT 1.30's WASM build (one thread, 2-core
 * Xeon, +-20% noise): int8 decode 15-20 ms and prefill-128 0.52-0.69 s against fp32's 24-29 ms and 0.9-1.1 s.
 * `mmi-row` and `dqmm` tie in decode (for one token, per tensor is per row) and `dqmm` is 0-10% faster in prefill;
 * `mmi-row` quantises each token's activations on its own, so one token's outliers do not coarsen the rest
 * of a prefill run (mean |logit error| 37% lower on that layer). `fold` runs at fp32 speed with fp32's heap.
 * q4 runs as int8: MatMulNBits takes ~20x longer than int8 in WASM.
 */
export const DEFAULT_QUANT_EXEC: QuantExec = { int8: 'mmi-row', q4: 'int8' };

const MS = 'com.microsoft';

/** A uint8 scalar constant, shared by name. */
function u8(b: GraphBuilder, v: number): string {
  return b.initializer(`const.u8.${v}`, DataType.UINT8, [], Uint8Array.of(v));
}

/** The int8 codes [in, out] and scales [out] of a weight as initializers. */
export function int8Initializers(b: GraphBuilder, name: string, q: Int8Weight): { codes: string; scales: string } {
  return {
    codes: b.initializer(`${name}${Q4_SUFFIX.int8}`, DataType.INT8, [q.cols, q.rows], transposeInt8(q)),
    scales: b.initializer(`${name}${Q4_SUFFIX.int8Scales}`, DataType.FLOAT, [q.rows], q.scales),
  };
}

/** y = x W^T for x [T, in] and int8 B = W^T [in, out] with per-column scales. */
export function int8MatMul(b: GraphBuilder, x: string, codes: string, scales: string, exec: Int8Exec): string {
  switch (exec) {
    case 'dqmm':
      return b.op('DynamicQuantizeMatMul', [x, codes, scales], {}, MS);
    case 'fold':
      return b.matmul(x, b.mul(b.cast(codes, DataType.FLOAT), scales));
    case 'mmi-row': {
      const absMax = b.op('ReduceMax', [b.op('Abs', [x]), b.ints([1])], { keepdims: 1 }); // [T, 1]
      const s = b.div(b.op('Max', [absMax, b.float(1e-30)]), b.float(127));
      const xq = b.cast(b.add(b.op('Round', [b.div(x, s)]), b.float(128)), DataType.UINT8); // [T, in] in 1..255
      const y = b.op('MatMulIntegerToFloat', [xq, codes, b.float(1), scales, u8(b, 128)], {}, MS);
      return b.mul(y, s);
    }
  }
}

/** A linear layer over an int8 weight [out, in]. */
export function int8Linear(b: GraphBuilder, name: string, q: Int8Weight, x: string, exec: Int8Exec): string {
  const { codes, scales } = int8Initializers(b, name, q);
  return int8MatMul(b, x, codes, scales, exec);
}

/** The stored q4 tensors as initializers: B [N, k_blocks, blockSize/2], scales [N, k_blocks], zero points. */
function q4Initializers(b: GraphBuilder, name: string, q: Q4Weight): { data: string; scales: string; zp: string } {
  const zpPerRow = Math.ceil(q.blocksPerRow / 2);
  return {
    data: b.initializer(`${name}${Q4_SUFFIX.data}`, DataType.UINT8, [q.rows, q.blocksPerRow, q.blockSize / 2], q.data),
    scales: b.initializer(`${name}${Q4_SUFFIX.scales}`, DataType.FLOAT, [q.rows, q.blocksPerRow], q.scales),
    zp: b.initializer(`${name}${Q4_SUFFIX.zeroPoints}`, DataType.UINT8, [q.rows, zpPerRow], q.zeroPoints),
  };
}

/** Names of a q4 weight's stored tensors and of its int8 execution form, as suffixes of the weight's name. */
export const Q4_SUFFIX = {
  data: '.q4',
  scales: '.q4scale',
  zeroPoints: '.q4zp',
  /** int64 [1]: K, the number of columns (the last block may be padded) */
  cols: '.q4cols',
  int8: '.int8',
  int8Scales: '.scale',
} as const;

/** Scope of the nodes that expand q4 weights; a loader may drop them and store their results instead. */
export const Q4_EXPAND_SCOPE = 'q4expand';

/** Split bytes [..., n] into their nibbles [..., 2n], low nibble first. */
function nibbles(b: GraphBuilder, bytes: string, shape: number[]): string {
  const lo = b.op('BitwiseAnd', [bytes, u8(b, 15)]);
  const hi = b.op('BitShift', [bytes, u8(b, 4)], { direction: 'RIGHT' });
  const pairs = b.concat([b.unsqueeze(lo, [-1]), b.unsqueeze(hi, [-1])], -1);
  return b.reshape(pairs, shape);
}

/** The fp32 weight [N, K] a q4 weight stands for, computed by constant-foldable ops. */
export function q4Expand(b: GraphBuilder, name: string, q: Q4Weight): string {
  return b.once(`q4expand:${name}`, () =>
    b.within(Q4_EXPAND_SCOPE, () => {
      const { data, scales, zp } = q4Initializers(b, name, q);
      const { rows: N, blocksPerRow: kb, blockSize } = q;
      const codes = nibbles(b, data, [N, kb, blockSize]); // uint8
      const zeros = b.slice(nibbles(b, zp, [N, 2 * Math.ceil(kb / 2)]), 1, 0, kb); // [N, kb]
      const centred = b.sub(b.cast(codes, DataType.FLOAT), b.unsqueeze(b.cast(zeros, DataType.FLOAT), [2]));
      const w = b.reshape(b.mul(centred, b.unsqueeze(scales, [2])), [N, kb * blockSize]);
      const cols = b.initializer(`${name}${Q4_SUFFIX.cols}`, DataType.INT64, [1], BigInt64Array.of(BigInt(q.cols)));
      return b.op('Slice', [w, b.ints([0]), cols, b.ints([1])]); // [N, K]
    }),
  );
}

/**
 * A q4 weight [N, K] requantised to int8 per output column by constant-foldable ops: codes [K, N] and
 * scales [N] for int8MatMul, named `<name>.int8` and `<name>.scale`. quantize.ts requantizeQ4ToInt8
 * computes the same bits in JS (expandQ4Graph uses it to spare ORT the fp32 intermediates).
 */
export function q4ToInt8(b: GraphBuilder, name: string, q: Q4Weight): { codes: string; scales: string } {
  return b.once(`q4int8:${name}`, () => {
    const w = q4Expand(b, name, q); // [N, K]
    return b.within(Q4_EXPAND_SCOPE, () => {
      const absMax = b.op('ReduceMax', [b.op('Abs', [w]), b.ints([1])], { keepdims: 1 }); // [N, 1]
      const s = b.div(absMax, b.float(127));
      const safe = b.op('Where', [b.op('Equal', [s, b.float(0)]), b.float(1), s]);
      const rounded = b.op('Clip', [b.op('Round', [b.div(w, safe)]), b.float(-127), b.float(127)]);
      const codes = b.transpose(b.cast(rounded, DataType.INT8), [1, 0]); // [K, N]
      return {
        codes: b.named(codes, `${name}${Q4_SUFFIX.int8}`),
        scales: b.named(b.reshape(s, [q.rows]), `${name}${Q4_SUFFIX.int8Scales}`),
      };
    });
  });
}

/** A linear layer over a q4 weight [out, in]. */
export function q4Linear(b: GraphBuilder, name: string, q: Q4Weight, x: string, exec: QuantExec): string {
  switch (exec.q4) {
    case 'nbits': {
      const { data, scales, zp } = q4Initializers(b, name, q);
      return b.op(
        'MatMulNBits',
        [x, data, scales, zp],
        { K: q.cols, N: q.rows, bits: 4, block_size: q.blockSize, accuracy_level: 4 },
        MS,
      );
    }
    case 'f32':
      return b.op('Gemm', [x, q4Expand(b, name, q)], { transB: 1 });
    case 'int8': {
      const { codes, scales } = q4ToInt8(b, name, q);
      return int8MatMul(b, x, codes, scales, exec.int8);
    }
  }
}
