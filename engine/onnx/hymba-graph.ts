// The Hymba forward pass as an ONNX graph for one stage = layers [first, last), continuing from any state.
//
// Inputs:  input_ids [T] int64 (stage with embedding; id V+j is meta token j) or hidden_in [T, H];
//          position [] int64: absolute position of the first new token (meta tokens count);
//          logits_from [] int64 (stage with head): first row that gets logits;
//          per layer i: conv.i [d_conv-1, d_in], ssm.i [d_in, N]; per producer: key.i [kv, S, dqk], value.i [kv, S, dv].
// Outputs: logits [T - logits_from, V] or hidden_out [T, H]; the same state names with "_out".
//
// Glossary (hymba.md): H hidden, d_in = expand*H SSM channels, N d_state, W window, M meta tokens,
// delta step size, A = -exp(A_log) decay, B/C input/output projections of the selective scan, D skip.

import type { HymbaDims, ModelConfig } from '../config.js';
import { ropeInvFreq } from '../config.js';
import { quantizeInt8, quantizeQ4, type ModelDtype } from '../quantize.js';
import { layerPrefix, weight, type Tensor, type WeightMap } from '../weights.js';
import { GraphBuilder, TO_END, type WeightDtype } from './builder.js';
import { DataType } from './proto.js';
import {
  DEFAULT_QUANT_EXEC,
  int8Initializers,
  int8MatMul,
  int8Linear,
  q4Linear,
  q4ToInt8,
  type QuantExec,
} from './quantized.js';

export interface StageSpec {
  first: number; // first layer (inclusive)
  last: number; // last layer (exclusive)
  embed: boolean; // embedding + meta tokens in front
  head: boolean; // final norm + tied lm_head behind
}

export interface GraphOptions {
  /**
   * Storage of the large matrices (in_proj, x_proj, dt_proj, out_proj, the MLP, the tied embedding/head):
   * f32; f16 (widened once at session creation); int8 per output channel; q4 blocks of 32 (expanded at
   * session creation). Norms, conv, A, D, biases, meta tokens and the scan stay fp32.
   */
  dtype: ModelDtype;
  /** how int8 and q4 weights execute (default DEFAULT_QUANT_EXEC: the fastest measured in WASM) */
  quantExec?: QuantExec;
  /** positions per first-level chunk of the parallel scan */
  scanChunk?: number;
  /** largest T one run must accept; the runner splits longer inputs. Longer runs cost more scan steps. */
  maxRunTokens?: number;
}

export const SCAN_CHUNK = 8;
/** Default largest T per run: long enough for efficient prefill, short enough to bound activation memory. */
export const DEFAULT_MAX_RUN_TOKENS = 128;

/** Names of a layer's state tensors, as graph inputs; outputs append "_out". */
export const stateNames = (i: number) => ({
  conv: `conv.${i}`,
  ssm: `ssm.${i}`,
  key: `key.${i}`,
  value: `value.${i}`,
});

/** Values shared by every layer of one run. */
interface RunContext {
  T: string; // [1] int64 new-token count
  qPos: string; // [T] int64 absolute positions of the new tokens
  cos: string; // [T, 1, dqk]
  sin: string; // [T, 1, dqk]
  /** K/V of each producer after this run's tokens (before trimming to the window) and their mask */
  kv: Map<number, { key: string; value: string; mask: string }>;
}

export function checkStage(dims: HymbaDims, s: StageSpec): void {
  if (s.first < 0 || s.last > dims.L || s.first >= s.last) throw new Error(`stage [${s.first}, ${s.last}) is empty`);
  for (let i = s.first; i < s.last; i++) {
    const kv = dims.layers[i]!.kv;
    if (kv.kind === 'consumer' && kv.producer < s.first)
      throw new Error(`stage [${s.first}, ${s.last}) splits layer ${i} from its KV producer ${kv.producer}`);
  }
}

export function buildStageGraph(model: ModelConfig, w: WeightMap, stage: StageSpec, opts: GraphOptions): GraphBuilder {
  const { dims } = model;
  checkStage(dims, stage);
  const b = new GraphBuilder();
  const position = b.input('position', [], DataType.INT64);
  let x = stage.embed ? embed(b, dims, w, opts) : b.input('hidden_in', ['T', dims.H]);
  const ctx = runContext(b, dims, x, position);
  for (let i = stage.first; i < stage.last; i++)
    x = b.within(`layer${i}`, () => hymbaLayer(b, dims, w, i, x, ctx, opts));
  if (stage.head) b.output(lmHead(b, dims, w, x, opts), 'logits', ['R', dims.V]);
  else b.output(x, 'hidden_out', ['T', dims.H]);
  return b;
}

/** Float storage of the tensors that follow the model's dtype when it is a float one. */
const floatDtype = (dtype: ModelDtype): WeightDtype => (dtype === 'f16' ? 'f16' : 'f32');
const quantExec = (opts: GraphOptions): QuantExec => opts.quantExec ?? DEFAULT_QUANT_EXEC;

const TABLE = 'model.embed_tokens.weight';

/**
 * The tied table E [V, H] of an int8 or q4 model in its int8 execution form: codes E^T [H, V] (B of the
 * head's matmul) with one scale per vocabulary row; the embedding gathers columns of the same tensor.
 */
function quantizedTable(
  b: GraphBuilder,
  d: HymbaDims,
  w: WeightMap,
  dtype: 'int8' | 'q4',
): { codes: string; scales: string } {
  return b.once(`table:${TABLE}`, () => {
    const t = weight(w, TABLE);
    return dtype === 'int8'
      ? int8Initializers(b, TABLE, quantizeInt8(t.data, d.V, d.H))
      : q4ToInt8(b, TABLE, quantizeQ4(t.data, d.V, d.H));
  });
}

/** The token table's lookup: ids [T] (all < V) -> rows [T, H]. Its weights are created here, once. */
function tokenTable(b: GraphBuilder, d: HymbaDims, w: WeightMap, opts: GraphOptions): (ids: string) => string {
  if (opts.dtype === 'int8' || opts.dtype === 'q4') {
    const { codes, scales } = quantizedTable(b, d, w, opts.dtype);
    return (ids) => {
      const cols = b.cast(b.op('Gather', [codes, ids], { axis: 1 }), DataType.FLOAT); // [H, T]
      return b.mul(b.transpose(cols, [1, 0]), b.unsqueeze(b.op('Gather', [scales, ids], { axis: 0 }), [1]));
    };
  }
  const table = b.weight(TABLE, [d.V, d.H], weight(w, TABLE).data, opts.dtype);
  return (ids) => b.op('Gather', [table, ids], { axis: 0 });
}

/** x = [meta tokens ; embed(ids)] expressed as one gather: ids >= V select meta rows. */
function embed(b: GraphBuilder, d: HymbaDims, w: WeightMap, opts: GraphOptions): string {
  const ids = b.input('input_ids', ['T'], DataType.INT64);
  const lookup = tokenTable(b, d, w, opts);
  if (d.M === 0) return lookup(ids);
  const metaData = weight(w, 'model.memory_tokens').data;
  const meta = b.weight('model.memory_tokens', [d.M, d.H], metaData, floatDtype(opts.dtype));
  const V = b.ints([d.V], true);
  const isMeta = b.op('GreaterOrEqual', [ids, V]); // [T]
  const zero = b.ints([0], true);
  const tokenRow = lookup(b.op('Where', [isMeta, zero, ids])); // [T, H]
  const metaRow = b.op('Gather', [meta, b.op('Where', [isMeta, b.sub(ids, V), zero])], { axis: 0 }); // [T, H]
  return b.op('Where', [b.unsqueeze(isMeta, [1]), metaRow, tokenRow]);
}

/** Positions of the new tokens and their RoPE tables (angles in fp32, as the reference computes them). */
function runContext(b: GraphBuilder, d: HymbaDims, x: string, position: string): RunContext {
  const T = b.dim(x, 0);
  const Tscalar = b.squeeze(T, [0]);
  const qPos = b.add(b.op('Range', [b.ints([0], true), Tscalar, b.ints([1], true)]), position); // [T]
  const invFreq = b.weight('rope.inv_freq', [1, d.dqk / 2], ropeInvFreq(d), 'f32');
  const angle = b.mul(b.unsqueeze(b.cast(qPos, DataType.FLOAT), [1]), invFreq); // [T, dqk/2]
  const full = b.unsqueeze(b.concat([angle, angle], 1), [1]); // [T, 1, dqk]
  return { T, qPos, cos: b.op('Cos', [full]), sin: b.op('Sin', [full]), kv: new Map() };
}

/** RMSNorm in fp32 as one node: ORT's SimplifiedLayerNormalization is x / sqrt(mean(x^2) + eps) * gamma. */
function rmsNorm(b: GraphBuilder, x: string, gamma: string, eps: number): string {
  return b.op('SimplifiedLayerNormalization', [x, gamma], { axis: -1, epsilon: { float: eps } });
}

/** A linear layer y = x W^T with W stored transposed ([in, out]) so MatMul needs no Transpose at run time. */
function linear(b: GraphBuilder, w: WeightMap, name: string, x: string, opts: GraphOptions): string {
  return linearOf(b, name, weight(w, name), x, opts);
}

function linearOf(b: GraphBuilder, name: string, t: Tensor, x: string, opts: GraphOptions): string {
  const [out, inp] = t.dims as [number, number];
  if (opts.dtype === 'int8') return int8Linear(b, name, quantizeInt8(t.data, out, inp), x, quantExec(opts).int8);
  if (opts.dtype === 'q4') return q4Linear(b, name, quantizeQ4(t.data, out, inp), x, quantExec(opts));
  const wt = new Float32Array(inp * out);
  for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) wt[i * out + o] = t.data[o * inp + i]!;
  return b.matmul(x, b.weight(name, [inp, out], wt, opts.dtype));
}

function vector(b: GraphBuilder, w: WeightMap, name: string): string {
  const t = weight(w, name);
  return b.weight(name, t.dims, t.data, 'f32'); // norms, biases, D stay fp32
}

/** One Hymba layer: attention heads and SSM heads in parallel on the same input, then the MLP. */
function hymbaLayer(
  b: GraphBuilder,
  d: HymbaDims,
  w: WeightMap,
  i: number,
  x: string,
  ctx: RunContext,
  opts: GraphOptions,
): string {
  const p = layerPrefix(i);
  const role = d.layers[i]!;
  const producer = role.kv.kind === 'producer';
  const h = rmsNorm(b, x, vector(b, w, `${p}input_layernorm.weight`), d.eps); // [T, H]
  const P = linear(b, w, `${p}mamba.in_proj.weight`, h, opts); // [T, rows]
  const widths = producer ? [d.H, d.kHidden, d.vHidden, d.dIn, d.dIn] : [d.H, d.dIn, d.dIn];
  const parts = b.split(P, 1, widths);
  const [q, u, z] = producer ? [parts[0]!, parts[3]!, parts[4]!] : [parts[0]!, parts[1]!, parts[2]!];
  if (producer) b.within('kv', () => updateKv(b, d, i, parts[1]!, parts[2]!, ctx));
  const kvOf = role.kv.kind === 'producer' ? i : role.kv.producer;
  const attn = b.within('attention', () => attentionBranch(b, d, q, ctx.kv.get(kvOf)!, ctx)); // [T, d_in]
  const m = b.within('ssm', () => ssmBranch(b, d, w, i, u, z, opts)); // [T, d_in]
  x = b.within('fuse', () => fuse(b, d, w, i, x, attn, m, opts));
  return b.within('mlp', () => mlp(b, d, w, i, x, opts));
}

/** Rotate-half RoPE over the full head width: x*cos + rotate_half(x)*sin, x [T, heads, dqk]. */
function rope(b: GraphBuilder, d: HymbaDims, x: string, ctx: RunContext): string {
  const [x1, x2] = b.split(x, 2, [d.dqk / 2, d.dqk / 2]) as [string, string];
  const rotated = b.concat([b.op('Neg', [x2]), x1], 2);
  return b.add(b.mul(x, ctx.cos), b.mul(rotated, ctx.sin));
}

/**
 * A producer's cache after this run: past K/V (meta entries, then the window or all earlier keys) with the
 * new rotated keys appended; the stored state keeps the meta entries and, in sliding layers, the last W keys.
 */
function updateKv(b: GraphBuilder, d: HymbaDims, i: number, kNew: string, vNew: string, ctx: RunContext): void {
  const names = stateNames(i);
  const pastK = b.input(names.key, [d.kvHeads, `S${i}`, d.dqk]);
  const pastV = b.input(names.value, [d.kvHeads, `S${i}`, d.dv]);
  const k = rope(b, d, b.reshape(kNew, [0, d.kvHeads, d.dqk]), ctx); // [T, kv, dqk]
  const v = b.reshape(vNew, [0, d.kvHeads, d.dv]); // [T, kv, dv]
  const key = b.concat([pastK, b.transpose(k, [1, 0, 2])], 1); // [kv, S+T, dqk]
  const value = b.concat([pastV, b.transpose(v, [1, 0, 2])], 1); // [kv, S+T, dv]
  const global = d.layers[i]!.attention === 'global';
  ctx.kv.set(i, { key, value, mask: attentionMask(b, d, pastK, ctx, global) });
  const keep = (t: string): string =>
    global ? t : b.concat([b.slice(t, 1, 0, d.M), b.slice(b.slice(t, 1, d.M, TO_END), 1, -d.W, TO_END)], 1);
  b.output(keep(key), `${names.key}_out`, [d.kvHeads, `S${i}_out`, d.dqk]);
  b.output(keep(value), `${names.value}_out`, [d.kvHeads, `S${i}_out`, d.dv]);
}

/**
 * Additive mask [T, S+T] from absolute positions. Stored entry j < M is meta token j; later stored entries
 * are the keys just before `position`. Allowed iff key <= query and (global or query-key <= W or key < M).
 */
function attentionMask(b: GraphBuilder, d: HymbaDims, pastK: string, ctx: RunContext, global: boolean): string {
  const S = b.dim(pastK, 1);
  const idx = b.op('Range', [b.ints([0], true), b.squeeze(S, [0]), b.ints([1], true)]); // [S]
  const firstQ = b.slice(ctx.qPos, 0, 0, 1); // [1] = position
  const recent = b.add(b.sub(firstQ, S), idx); // position - S + j
  const M = b.ints([d.M], true);
  const pastPos = b.op('Where', [b.op('Less', [idx, M]), idx, recent]);
  const kPos = b.concat([pastPos, ctx.qPos], 0); // [S+T]
  const diff = b.sub(b.unsqueeze(ctx.qPos, [1]), b.unsqueeze(kPos, [0])); // [T, S+T]
  let allowed = b.op('GreaterOrEqual', [diff, b.ints([0], true)]);
  if (!global) {
    const inWindow = b.op('LessOrEqual', [diff, b.ints([d.W], true)]);
    const isMeta = b.unsqueeze(b.op('Less', [kPos, M]), [0]);
    allowed = b.op('And', [allowed, b.op('Or', [inWindow, isMeta])]);
  }
  return b.op('Where', [allowed, b.float(0), b.float(-1e30)]);
}

/** Grouped-query attention: head h reads KV head floor(h / g); output [T, heads*dv] = [T, d_in]. */
function attentionBranch(
  b: GraphBuilder,
  d: HymbaDims,
  qFlat: string,
  kv: { key: string; value: string; mask: string },
  ctx: RunContext,
): string {
  const g = d.heads / d.kvHeads;
  const q = rope(b, d, b.reshape(qFlat, [0, d.heads, d.dqk]), ctx); // [T, heads, dqk]
  const qs = b.mul(q, b.float(1 / Math.sqrt(d.dqk)));
  const qg = b.reshape(b.transpose(b.reshape(qs, [0, d.kvHeads, g, d.dqk]), [1, 2, 0, 3]), [d.kvHeads, -1, d.dqk]); // [kv, g*T, dqk]
  const scores = b.matmul(qg, b.transpose(kv.key, [0, 2, 1])); // [kv, g*T, S+T]
  const keys = b.dim(kv.key, 1); // S+T
  const masked = b.add(b.reshapeTo(scores, [d.kvHeads, g, -1, keys]), kv.mask); // [kv, g, T, S+T]
  const probs = b.op('Softmax', [masked], { axis: -1 });
  const out = b.matmul(b.reshapeTo(probs, [d.kvHeads, -1, keys]), kv.value); // [kv, g*T, dv]
  const heads = b.transpose(b.reshape(out, [d.kvHeads, g, -1, d.dv]), [2, 0, 1, 3]); // [T, kv, g, dv]
  return b.reshape(heads, [0, d.heads * d.dv]);
}

/** The Mamba branch: causal conv, input-dependent delta/B/C, selective scan, gate. */
function ssmBranch(
  b: GraphBuilder,
  d: HymbaDims,
  w: WeightMap,
  i: number,
  u: string,
  z: string,
  opts: GraphOptions,
): string {
  const p = `${layerPrefix(i)}mamba.`;
  const names = stateNames(i);
  const uc = b.silu(causalConv(b, d, w, i, u)); // [T, d_in]
  const [dtRaw, Braw, Craw] = b.split(linear(b, w, `${p}x_proj.0.weight`, uc, opts), 1, [
    d.dtRank,
    d.dState,
    d.dState,
  ]) as [string, string, string];
  const dt = rmsNorm(b, dtRaw, vector(b, w, `${p}dt_layernorm.weight`), d.eps); // [T, R]
  const B = rmsNorm(b, Braw, vector(b, w, `${p}B_layernorm.weight`), d.eps); // [T, N]
  const C = rmsNorm(b, Craw, vector(b, w, `${p}C_layernorm.weight`), d.eps); // [T, N]
  const delta = b.op('Softplus', [
    b.add(linear(b, w, `${p}dt_proj.0.weight`, dt, opts), vector(b, w, `${p}dt_proj.0.bias`)),
  ]); // [T, d_in]
  const Alog = weight(w, `${p}A_log.0`);
  const A = b.weight(
    `${p}A`,
    Alog.dims,
    Alog.data.map((v) => -Math.exp(v)),
    'f32',
  ); // [d_in, N]
  const delta3 = b.unsqueeze(delta, [2]); // [T, d_in, 1]
  const decay = b.exp(b.mul(delta3, A)); // [T, d_in, N]
  const drive = b.mul(b.mul(delta3, b.unsqueeze(uc, [2])), b.unsqueeze(B, [1])); // [T, d_in, N]
  const s0 = b.input(names.ssm, [d.dIn, d.dState]);
  const states = selectiveScan(b, d, decay, drive, s0, opts); // [T, d_in, N]
  b.output(b.squeeze(b.slice(states, 0, -1, TO_END), [0]), `${names.ssm}_out`, [d.dIn, d.dState]);
  const y = b.squeeze(b.matmul(states, b.unsqueeze(C, [2])), [2]); // [T, d_in] = sum_n C[n] s[c, n]
  const withSkip = b.add(y, b.mul(uc, vector(b, w, `${p}D.0`)));
  return b.mul(withSkip, b.silu(z));
}

/** Depthwise causal conv over [conv state ; u]; the new state is the last d_conv-1 inputs. */
function causalConv(b: GraphBuilder, d: HymbaDims, w: WeightMap, i: number, u: string): string {
  const p = `${layerPrefix(i)}mamba.`;
  const names = stateNames(i);
  const past = b.input(names.conv, [d.dConv - 1, d.dIn]);
  const xs = b.concat([past, u], 0); // [d_conv-1+T, d_in]
  b.output(b.slice(xs, 0, -(d.dConv - 1), TO_END), `${names.conv}_out`, [d.dConv - 1, d.dIn]);
  const kernel = weight(w, `${p}conv1d.weight`);
  const k = b.weight(`${p}conv1d.weight`, kernel.dims, kernel.data, 'f32');
  const y = b.op('Conv', [b.unsqueeze(b.transpose(xs, [1, 0]), [0]), k, vector(b, w, `${p}conv1d.bias`)], {
    group: d.dIn,
    kernel_shape: [d.dConv],
  }); // [1, d_in, T]
  return b.transpose(b.squeeze(y, [0]), [1, 0]);
}

/**
 * s_t = a_t * s_{t-1} + b_t for every t of the run. One decode step (T = 1) is a single update; longer runs
 * use the parallel scan below instead of a per-position op chain. Returns the states [T, d_in, N].
 */
export function selectiveScan(
  b: GraphBuilder,
  d: HymbaDims,
  a: string,
  bb: string,
  s0: string,
  opts: GraphOptions,
): string {
  const T = b.dim(a, 0);
  const oneToken = b.op('Equal', [T, b.ints([1])]);
  const [states] = b.ifElse(
    oneToken,
    (s) => [s.add(s.mul(a, s.unsqueeze(s0, [0])), bb)],
    (s) => [parallelScan(s, d, a, bb, s0, T, opts)],
  );
  return states!;
}

/**
 * The scan for T > 1 in two levels over (a, b) pairs, composed as (a2, b2) o (a1, b1) = (a2 a1, a2 b1 + b2):
 * 1. within chunks of Q positions, unrolled: the chunk axis is split into Q slices and combined in order
 *    (every op works on 1/Q of the data, and there are no shift copies);
 * 2. over the chunk totals, a Hillis-Steele scan whose shifts pad with the identity (a=1, b=0), so a step
 *    whose offset exceeds the number of chunks is a no-op and any T up to the limit works.
 * Then each position's state is its in-chunk prefix applied to the state entering its chunk.
 */
function parallelScan(
  b: GraphBuilder,
  d: HymbaDims,
  a: string,
  bb: string,
  s0: string,
  T: string,
  opts: GraphOptions,
): string {
  const Q = opts.scanChunk ?? SCAN_CHUNK;
  const carrySteps = Math.ceil(Math.log2(Math.max(1, (opts.maxRunTokens ?? DEFAULT_MAX_RUN_TOKENS) / Q)));
  const nC = b.div(b.add(T, b.ints([Q - 1])), b.ints([Q])); // ceil(T / Q)
  const padLen = b.sub(b.mul(nC, b.ints([Q])), T);
  const padPairs = b.concat([b.ints([0, 0, 0]), padLen, b.ints([0, 0])], 0); // [begins..., ends...]: end of axis 0
  const toChunks = (x: string, fill: number): string[] =>
    b.split(
      b.reshapeTo(b.op('Pad', [x, padPairs, b.float(fill)]), [nC, Q, d.dIn, d.dState]),
      1,
      new Array<number>(Q).fill(1),
    ); // Q x [nC, 1, d_in, N]
  const as = toChunks(a, 1);
  const bs = toChunks(bb, 0);
  const prefixA = [as[0]!];
  const prefixB = [bs[0]!];
  for (let i = 1; i < Q; i++) {
    prefixA.push(b.mul(as[i]!, prefixA[i - 1]!));
    prefixB.push(b.add(b.mul(as[i]!, prefixB[i - 1]!), bs[i]!));
  }
  // carry across chunks: cumulative (a, b) of each chunk's total
  let A2 = b.squeeze(prefixA[Q - 1]!, [1]); // [nC, d_in, N]
  let B2 = b.squeeze(prefixB[Q - 1]!, [1]);
  for (let s = 0, off = 1; s < carrySteps; s++, off *= 2) [A2, B2] = scanStep(b, A2, B2, 0, off, 3, nC);
  const ends = b.add(b.mul(A2, b.unsqueeze(s0, [0])), B2); // state after each chunk [nC, d_in, N]
  const entering = b.unsqueeze(b.slice(b.concat([b.unsqueeze(s0, [0]), ends], 0), 0, 0, nC), [1]); // [nC, 1, d_in, N]
  const states = prefixA.map((pa, i) => b.add(b.mul(pa, entering), prefixB[i]!)); // Q x [nC, 1, d_in, N]
  return b.slice(b.reshape(b.concat(states, 1), [-1, d.dIn, d.dState]), 0, 0, T); // [T, d_in, N]
}

/** One Hillis-Steele step along `axis` (of length `len`): combine each element with the one `off` earlier. */
function scanStep(
  b: GraphBuilder,
  A: string,
  B: string,
  axis: number,
  off: number,
  rank: number,
  len: string,
): [string, string] {
  const pads = new Array<number>(2 * rank).fill(0);
  pads[axis] = off;
  const shift = (x: string, fill: number): string =>
    b.slice(b.op('Pad', [x, b.ints(pads), b.float(fill)]), axis, 0, len);
  const [Aprev, Bprev] = [shift(A, 1), shift(B, 0)];
  return [b.mul(A, Aprev), b.add(b.mul(A, Bprev), B)];
}

/** x = x + out_proj((RMSNorm(attn) + RMSNorm(ssm)) / 2): the two branches are normalised, then averaged. */
function fuse(
  b: GraphBuilder,
  d: HymbaDims,
  w: WeightMap,
  i: number,
  x: string,
  attn: string,
  m: string,
  opts: GraphOptions,
): string {
  const p = `${layerPrefix(i)}mamba.`;
  const a = rmsNorm(b, attn, vector(b, w, `${p}pre_avg_layernorm1.weight`), d.eps);
  const s = rmsNorm(b, m, vector(b, w, `${p}pre_avg_layernorm2.weight`), d.eps);
  const avg = b.mul(b.add(a, s), b.float(0.5));
  return b.add(x, linear(b, w, `${p}out_proj.weight`, avg, opts));
}

/** Gated MLP: x + down(SiLU(gate n) * up n), gate and up fused into one matmul. */
function mlp(b: GraphBuilder, d: HymbaDims, w: WeightMap, i: number, x: string, opts: GraphOptions): string {
  const p = layerPrefix(i);
  const n = rmsNorm(b, x, vector(b, w, `${p}pre_moe_layernorm.weight`), d.eps);
  const gate = weight(w, `${p}moe.experts.0.gate_proj.weight`);
  const up = weight(w, `${p}moe.experts.0.up_proj.weight`);
  const both = new Float32Array(2 * d.I * d.H);
  both.set(gate.data, 0);
  both.set(up.data, d.I * d.H);
  const gateUp = { dims: [2 * d.I, d.H], data: both };
  const fusedName = `${p}moe.experts.0.gate_up_proj.weight`;
  const [g, u] = b.split(linearOf(b, fusedName, gateUp, n, opts), 1, [d.I, d.I]) as [string, string];
  return b.add(x, linear(b, w, `${p}moe.experts.0.down_proj.weight`, b.mul(b.silu(g), u), opts));
}

/**
 * Final norm and the tied head on rows [logits_from, T): logits = x E^T via Gemm(transB) without a copy of
 * E; int8/q4 models multiply by the int8 table E^T [H, V] that the embedding gathers from.
 */
function lmHead(b: GraphBuilder, d: HymbaDims, w: WeightMap, x: string, opts: GraphOptions): string {
  const from = b.input('logits_from', [], DataType.INT64);
  const n = rmsNorm(b, x, vector(b, w, 'model.final_layernorm.weight'), d.eps);
  const rows = b.slice(n, 0, b.unsqueeze(from, [0]), TO_END);
  if (opts.dtype === 'int8' || opts.dtype === 'q4') {
    const { codes, scales } = quantizedTable(b, d, w, opts.dtype);
    return int8MatMul(b, rows, codes, scales, quantExec(opts).int8);
  }
  const E = b.weight(TABLE, [d.V, d.H], weight(w, TABLE).data, opts.dtype);
  return b.op('Gemm', [rows, E], { transB: 1 });
}
