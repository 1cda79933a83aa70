// Slice stages: one share of one block, run beside its sibling slices on the same input (stage-spec.ts
// SliceSpec; steps.ts combines the outputs). MLP slices split the intermediate columns, embedding and head
// slices the vocabulary rows of the tied table; every share is computed exactly as the whole block computes
// it, so the combined outputs equal the unsliced block's (up to the order of the final sums).

import { quantizeInt8, quantizeQ4, requantizeQ4ToInt8 } from '../convert/quantize.js';
import { lmHead, metaTable, tokenTable } from '../model/embedding.js';
import { mlpHidden } from '../model/graph.js';
import { linear, linearOf, quantExec, type GraphCtx } from '../model/ops.js';
import { mlpWeights, type MlpWeights, type NamedTensor } from '../model/weights.js';
import { int8Linear } from '../onnx/quantized.js';
import type { StageIO } from './stage-io.js';
import { sliceRange, type SliceSpec } from './stage-spec.js';

/** The graph of a slice stage; its inputs (io.inputs) are already declared. No position, no state. */
export function sliceGraph(g: GraphCtx, slice: SliceSpec, io: StageIO): void {
  const { b, d } = g;
  const input = io.input.name;
  switch (slice.kind) {
    case 'mlp': {
      const x = b.reshape(input, [-1, d.H]); // [R, H]
      const cols = sliceRange(d.I, slice.part, slice.parts);
      const lw = mlpWeights(g.w, d, slice.layer);
      const y = b.within(`layer${slice.layer}`, () => b.within('mlp', () => mlpSlice(g, lw, x, cols)));
      b.output(b.op('Reshape', [y, b.op('Shape', [input])]), io.output.name, io.output.shape);
      break;
    }
    case 'embed': {
      const rows = sliceRange(d.V, slice.part, slice.parts);
      const x = embedSlice(g, b.reshape(input, [-1]), rows, slice.part === 0);
      const shape = b.concat([b.op('Shape', [input]), b.ints([d.H])], 0);
      b.output(b.op('Reshape', [x, shape]), io.output.name, io.output.shape);
      break;
    }
    case 'head': {
      const rows = sliceRange(d.V, slice.part, slice.parts);
      b.output(lmHead(g, input, io.logitsFrom!.name, rows), io.output.name, io.output.shape);
      break;
    }
  }
}

/** down_k(SiLU(gate_k n) * up_k n) over intermediate columns [lo, hi), n = RMSNorm(x): the MLP without its residual. */
function mlpSlice(g: GraphCtx, lw: MlpWeights, x: string, cols: [number, number]): string {
  const hidden = mlpHidden(g, lw, x, cols); // [R, hi - lo]
  if (cols[0] === 0 && cols[1] === g.d.I) return linear(g, lw.down_proj, hidden);
  return downSlice(g, lw.down_proj, hidden, cols);
}

/**
 * Columns [lo, hi) of down_proj [H, I] applied to x [R, hi - lo]. down_proj's int8/q4 scales are per output
 * row over all I inputs, so a quantised down slice is quantised whole first, then its columns taken.
 */
function downSlice(g: GraphCtx, t: NamedTensor, x: string, [lo, hi]: [number, number]): string {
  const { b, d, opts } = g;
  const Ik = hi - lo;
  if (opts.dtype === 'int8' || opts.dtype === 'q4') {
    // the unsliced stage's execution form: int8 per output row (q4 requantised whole, as on load), then columns
    const whole =
      opts.dtype === 'int8' ? quantizeInt8(t.data, d.H, d.I) : requantizeQ4ToInt8(quantizeQ4(t.data, d.H, d.I));
    const data = new Int8Array(d.H * Ik);
    for (let r = 0; r < d.H; r++) data.set(whole.data.subarray(r * d.I + lo, r * d.I + hi), r * Ik);
    return int8Linear(b, t.name, { rows: d.H, cols: Ik, data, scales: whole.scales }, x, quantExec(opts).int8);
  }
  const cols = new Float32Array(d.H * Ik);
  for (let r = 0; r < d.H; r++) cols.set(t.data.subarray(r * d.I + lo, r * d.I + hi), r * Ik);
  return linearOf(g, t.name, { dims: [d.H, Ik], data: cols }, x);
}

/**
 * Vocabulary rows [lo, hi) of the embedding: ids [R] -> rows [R, H], zeros for ids outside; with `meta`,
 * ids >= V select meta rows as in embed(). Each id is owned by exactly one part, so the parts sum exactly.
 */
function embedSlice(g: GraphCtx, ids: string, [lo, hi]: [number, number], meta: boolean): string {
  const { b, d } = g;
  const lookup = tokenTable(g, [lo, hi]);
  const zero = b.ints([0], true);
  const owned = b.op('And', [
    b.op('GreaterOrEqual', [ids, b.ints([lo], true)]),
    b.op('Less', [ids, b.ints([hi], true)]),
  ]); // [R]
  const local = b.op('Where', [owned, b.sub(ids, b.ints([lo], true)), zero]);
  let rows = b.op('Where', [b.unsqueeze(owned, [1]), lookup(local), b.float(0)]); // [R, H]
  if (meta && d.M > 0) {
    const table = metaTable(g);
    const V = b.ints([d.V], true);
    const isMeta = b.op('GreaterOrEqual', [ids, V]);
    const metaRow = b.op('Gather', [table, b.op('Where', [isMeta, b.sub(ids, V), zero])], { axis: 0 });
    rows = b.op('Where', [b.unsqueeze(isMeta, [1]), metaRow, rows]);
  }
  return rows;
}
