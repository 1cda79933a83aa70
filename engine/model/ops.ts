// What every block of a Hymba graph is built from: the graph's context (builder, dims, weights, options),
// RMSNorm, linear layers in the model's weight format, and fp32 vectors.

import type { HymbaDims } from './config.js';
import { quantizeInt8, quantizeQ4, type ModelDtype } from '../convert/quantize.js';
import type { NamedTensor, Tensor, WeightMap } from './weights.js';
import type { GraphBuilder, WeightDtype } from '../onnx/builder.js';
import { DEFAULT_QUANT_EXEC, int8Linear, q4Linear, type QuantExec } from '../onnx/quantized.js';

export interface GraphOptions {
  /**
   * Storage of the large matrices (in_proj, x_proj, dt_proj, out_proj, the MLP, the tied embedding/head):
   * f32; f16 (widened once at session creation); int8 per output channel; q4 blocks of 32 (expanded at
   * session creation). Norms, conv, A, D, biases, meta tokens and the scan stay fp32.
   */
  dtype: ModelDtype;
  /** how int8 and q4 weights execute (default DEFAULT_QUANT_EXEC: the fastest measured in WASM) */
  quantExec?: QuantExec;
  /** positions per first-level chunk of the parallel scan (default scan.ts SCAN_CHUNK) */
  scanChunk?: number;
  /** largest T one run must accept; the runner splits longer inputs. Longer runs cost more scan steps. */
  maxRunTokens?: number;
}

/** What every block of one graph reads: the builder, the dimensions, the stage's weights, the options. */
export interface GraphCtx {
  b: GraphBuilder;
  d: HymbaDims;
  /** the stage's weights by checkpoint name (only the tensors of the blocks it holds) */
  w: WeightMap;
  opts: GraphOptions;
}

/** Float storage of the tensors that follow the model's dtype when it is a float one. */
export const floatDtype = (dtype: ModelDtype): WeightDtype => (dtype === 'f16' ? 'f16' : 'f32');
export const quantExec = (opts: GraphOptions): QuantExec => opts.quantExec ?? DEFAULT_QUANT_EXEC;

/** RMSNorm in fp32 as one node: ORT's SimplifiedLayerNormalization is x / sqrt(mean(x^2) + eps) * gamma. */
export function rmsNorm(g: GraphCtx, x: string, gamma: NamedTensor): string {
  return g.b.op('SimplifiedLayerNormalization', [x, vector(g, gamma)], { axis: -1, epsilon: { float: g.d.eps } });
}

/** A linear layer y = x W^T with W stored transposed ([in, out]) so MatMul needs no Transpose at run time. */
export function linear(g: GraphCtx, t: NamedTensor, x: string): string {
  return linearOf(g, t.name, t, x);
}

/** A linear layer over a tensor derived from the checkpoint (a fused or sliced weight), stored as `name`. */
export function linearOf(g: GraphCtx, name: string, t: Tensor, x: string): string {
  const { b, opts } = g;
  const [out, inp] = t.dims as [number, number];
  if (opts.dtype === 'int8') return int8Linear(b, name, quantizeInt8(t.data, out, inp), x, quantExec(opts).int8);
  if (opts.dtype === 'q4') return q4Linear(b, name, quantizeQ4(t.data, out, inp), x, quantExec(opts));
  const wt = new Float32Array(inp * out);
  for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) wt[i * out + o] = t.data[o * inp + i]!;
  return b.matmul(x, b.weight(name, [inp, out], wt, opts.dtype));
}

/** Norms, biases, D: always fp32. */
export function vector(g: GraphCtx, t: NamedTensor): string {
  return g.b.weight(t.name, t.dims, t.data, 'f32');
}
