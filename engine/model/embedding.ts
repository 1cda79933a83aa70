// The tied token table E [V, H] at both ends of the model: the embedding gathers its rows (with the meta
// tokens in front of the text), the head multiplies by E^T after the final norm. In int8 and q4 models both
// use one int8 table, E^T [H, V] with one scale per vocabulary row.

import { quantizeInt8, quantizeQ4 } from '../convert/quantize.js';
import { TO_END } from '../onnx/builder.js';
import { DataType } from '../onnx/proto.js';
import { int8Initializers, int8MatMul, q4ToInt8 } from '../onnx/quantized.js';
import { floatDtype, quantExec, rmsNorm, type GraphCtx } from './ops.js';
import { namedWeight, weight } from './weights.js';

export const TABLE = 'model.embed_tokens.weight';
export const META = 'model.memory_tokens';

/**
 * The tied table of an int8 or q4 model in its int8 execution form: codes E^T [H, V] (B of the head's
 * matmul) with one scale per vocabulary row; the embedding gathers columns of the same tensor.
 */
function quantizedTable(
  g: GraphCtx,
  dtype: 'int8' | 'q4',
  rows: [number, number] = [0, g.d.V],
): { codes: string; scales: string } {
  const { b, d } = g;
  // one scale per vocabulary row (q4: per row and block of H): quantising rows [lo, hi) alone is exact
  return b.once(`table:${TABLE}`, () => {
    const t = tableRows(g, rows);
    const n = rows[1] - rows[0];
    return dtype === 'int8'
      ? int8Initializers(b, TABLE, quantizeInt8(t, n, d.H))
      : q4ToInt8(b, TABLE, quantizeQ4(t, n, d.H));
  });
}

/** Rows [lo, hi) of the tied table [V, H] (the whole table: the stored array itself). */
function tableRows(g: GraphCtx, [lo, hi]: [number, number]): Float32Array {
  const t = weight(g.w, TABLE).data;
  return lo === 0 && hi === g.d.V ? t : t.subarray(lo * g.d.H, hi * g.d.H);
}

/** The token table's lookup over its rows [lo, hi): ids [R] (all in range) -> rows [R, H]; weights created once. */
export function tokenTable(g: GraphCtx, rows: [number, number] = [0, g.d.V]): (ids: string) => string {
  const { b, d, opts } = g;
  if (opts.dtype === 'int8' || opts.dtype === 'q4') {
    const { codes, scales } = quantizedTable(g, opts.dtype, rows);
    return (ids) => {
      const cols = b.cast(b.op('Gather', [codes, ids], { axis: 1 }), DataType.FLOAT); // [H, R]
      return b.mul(b.transpose(cols, [1, 0]), b.unsqueeze(b.op('Gather', [scales, ids], { axis: 0 }), [1]));
    };
  }
  const table = b.weight(TABLE, [rows[1] - rows[0], d.H], tableRows(g, rows), opts.dtype);
  return (ids) => b.op('Gather', [table, ids], { axis: 0 });
}

/** The meta tokens [M, H], stored in the model's float dtype. */
export function metaTable(g: GraphCtx): string {
  const { b, d, opts } = g;
  return b.weight(META, [d.M, d.H], weight(g.w, META).data, floatDtype(opts.dtype));
}

/** x = [meta tokens ; embed(ids)] expressed as one gather: ids [R] >= V select meta rows. Returns [R, H]. */
export function embed(g: GraphCtx, ids: string): string {
  const { b, d } = g;
  const lookup = tokenTable(g);
  if (d.M === 0) return lookup(ids);
  const meta = metaTable(g);
  const V = b.ints([d.V], true);
  const isMeta = b.op('GreaterOrEqual', [ids, V]); // [R]
  const zero = b.ints([0], true);
  const tokenRow = lookup(b.op('Where', [isMeta, zero, ids])); // [R, H]
  const metaRow = b.op('Gather', [meta, b.op('Where', [isMeta, b.sub(ids, V), zero])], { axis: 0 }); // [R, H]
  return b.op('Where', [b.unsqueeze(isMeta, [1]), metaRow, tokenRow]);
}

/**
 * Final norm and the tied head on each session's rows [logits_from, T) of hidden [B, T, H], for vocabulary
 * rows [lo, hi) of the table (the whole head: [0, V); a head slice: its share): logits [R', hi - lo].
 * logits = x E^T via Gemm(transB) without a copy of E; int8/q4 models multiply by the int8 table E^T.
 */
export function lmHead(g: GraphCtx, hidden: string, logitsFrom: string, vocab: [number, number]): string {
  const { b, d, opts } = g;
  const wanted = b.slice(hidden, 1, b.unsqueeze(logitsFrom, [0]), TO_END); // [B, T - from, H]
  const rows = rmsNorm(g, b.reshape(wanted, [-1, d.H]), namedWeight(g.w, 'model.final_layernorm.weight'));
  if (opts.dtype === 'int8' || opts.dtype === 'q4') {
    const { codes, scales } = quantizedTable(g, opts.dtype, vocab);
    return int8MatMul(b, rows, codes, scales, quantExec(opts).int8);
  }
  const E = b.weight(TABLE, [vocab[1] - vocab[0], d.H], tableRows(g, vocab), opts.dtype);
  return b.op('Gemm', [rows, E], { transB: 1 });
}
