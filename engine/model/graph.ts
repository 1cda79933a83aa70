// The Hymba forward pass as an ONNX graph for one stage = layers [first, last), continuing from any state, for
// a batch of B sessions at once (B = 1 for a prompt; B > 1 decodes one token of each of several sessions).
//
// Inputs:  input_ids [B, T] int64 (stage with embedding; id V+j is meta token j) or hidden_in [B, T, H];
//          position [B] int64: absolute position of each session's first new token (meta tokens count);
//          logits_from [] int64 (stage with head): first row of each session that gets logits;
//          per layer i: conv.i [B, d_conv-1, d_in], ssm.i [B, d_in, N];
//          per producer: key.i [B, kv, S, dqk], value.i [B, kv, S, dv], S = the longest session's entry count;
//          session b's first kvEntries(position_b) entries are real, the rest right padding (masked out).
//          per mirrored producer p (kvIn): key.p / value.p as above (the stage's own copy of p's cache) and
//          key.p_new [B, kv, T, dqk], value.p_new [B, kv, T, dv]: the new entries p's stage output in this run.
// Outputs: logits [B * (T - logits_from), V] or hidden_out [B, T, H]; the same state names with "_out", except
//          that K/V outputs hold only the T new entries, [B, kv, T, d] (rotated keys, values): the caller
//          appends them and trims sliding caches (the graph would copy the whole cache once more to do it).
//
// A stage covers a range of sublayer units: unit 2i is layer i's mixer block (attention + SSM heads and the
// residual around them), unit 2i+1 its MLP block. A slice stage holds one share of one block instead (MLP
// intermediate columns, vocabulary rows of the embedding or of the head); its siblings run on the same input
// and the caller combines their outputs (engine/stages/steps.ts). Slices take no position and no state.
//
// The trunk stays 2-D, rows R = B*T (norms, matmuls, MLP, head work row by row); only the sequential parts
// (RoPE positions, causal conv, scan, attention and the K/V update) see the [B, T, ...] layout.
//
// Glossary (hymba.md): H hidden, d_in = expand*H SSM channels, N d_state, W window, M meta tokens,
// delta step size, A = -exp(A_log) decay, B/C input/output projections of the selective scan, D skip.

import type { HymbaDims, ModelConfig } from './config.js';
import { ropeInvFreq } from './config.js';
import { quantizeInt8, quantizeQ4, requantizeQ4ToInt8, type ModelDtype } from '../convert/quantize.js';
import { layerPrefix, weight, type Tensor, type WeightMap } from './weights.js';
import { GraphBuilder, TO_END, type WeightDtype } from '../onnx/builder.js';
import { DataType } from '../onnx/proto.js';
import {
  DEFAULT_QUANT_EXEC,
  int8Initializers,
  int8MatMul,
  int8Linear,
  q4Linear,
  q4ToInt8,
  type QuantExec,
} from '../onnx/quantized.js';

/** One share of one block, run in parallel with its sibling parts on the same input (part k of `parts`). */
export type SliceSpec =
  /** input hidden x [T, H]; output down_k(silu(gate_k n) * up_k n), n = RMSNorm(x), intermediate columns sliceRange(I); the caller adds x + the sum */
  | { kind: 'mlp'; layer: number; part: number; parts: number }
  /** input ids; output rows [T, H] for ids in its vocabulary rows sliceRange(V) (part 0 also the meta tokens), zeros otherwise; the caller sums */
  | { kind: 'embed'; part: number; parts: number }
  /** input hidden; output final norm + logits of its vocabulary rows [rows, V_k]; the caller concatenates along V */
  | { kind: 'head'; part: number; parts: number };

export interface StageSpec {
  first: number; // first layer touched (inclusive)
  last: number; // last layer touched (exclusive)
  embed: boolean; // embedding + meta tokens in front
  head: boolean; // final norm + tied lm_head behind
  /** sublayer units [from, to): 2i = layer i's mixer block, 2i+1 its MLP block; absent: [2*first, 2*last) */
  units?: { from: number; to: number };
  /** the stage is one slice of one block and holds nothing else (embed/head false, no units) */
  slice?: SliceSpec;
  /** producers whose K/V this stage mirrors: a consumer's mixer is here, the producer's is not */
  kvIn?: number[];
  /** producers whose mixer is here and whose new K/V entries a later stage mirrors */
  kvOut?: number[];
}

/** Part k of n of a range of `size` rows: [floor(k*size/n), floor((k+1)*size/n)). */
export const sliceRange = (size: number, part: number, parts: number): [number, number] => [
  Math.floor((part * size) / parts),
  Math.floor(((part + 1) * size) / parts),
];

/** The sublayer units a (non-slice) stage runs. */
export const stageUnits = (s: StageSpec): { from: number; to: number } =>
  s.units ?? { from: 2 * s.first, to: 2 * s.last };

/** Layers whose mixer block (and so whose conv/SSM state and, for producers, K/V cache) the stage holds. */
export function mixerLayers(s: StageSpec): number[] {
  if (s.slice) return [];
  const { from, to } = stageUnits(s);
  const out: number[] = [];
  for (let i = Math.ceil(from / 2); 2 * i < to; i++) out.push(i);
  return out;
}

/** Whether a stage takes token ids (the embedding or an embedding slice) rather than hidden rows. */
export const takesIds = (s: StageSpec): boolean => s.embed || s.slice?.kind === 'embed';
/** Whether a stage returns logits (the head or a head slice). */
export const givesLogits = (s: StageSpec): boolean => s.head || s.slice?.kind === 'head';

/** Names of a mirrored producer's new entries, as graph inputs. */
export const mirrorNames = (p: number) => ({ key: `key.${p}_new`, value: `value.${p}_new` });

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
  Bs: string; // [1] int64 number of sessions
  T: string; // [1] int64 new tokens per session
  position: string; // [B, 1] int64 each session's position before the run
  qPos: string; // [B, T] int64 absolute positions of the new tokens
  cos: string; // [B, T, 1, dqk]
  sin: string; // [B, T, 1, dqk]
  /** K/V of each producer after this run's tokens (before trimming to the window) and their mask */
  kv: Map<number, { key: string; value: string; mask: string }>;
}

/**
 * The shape [B, T, ...rest] (rest constant), built once per graph: the first use must be in the main graph,
 * not inside an If branch, whose values the rest of the graph cannot see.
 */
function shapeBT(b: GraphBuilder, ctx: RunContext, rest: number[]): string {
  return b.once(`shapeBT:${rest.join(',')}`, () => b.concat([ctx.Bs, ctx.T, b.ints(rest)], 0));
}

/** Rows [R, ...] viewed as [B, T, ...rest]. */
function toBT(b: GraphBuilder, ctx: RunContext, x: string, rest: number[]): string {
  return b.op('Reshape', [x, shapeBT(b, ctx, rest)]);
}

export function checkStage(dims: HymbaDims, s: StageSpec): void {
  if (s.slice) return checkSlice(dims, s, s.slice);
  if (s.first < 0 || s.last > dims.L || s.first >= s.last) throw new Error(`stage [${s.first}, ${s.last}) is empty`);
  const { from, to } = stageUnits(s);
  if (!(Number.isInteger(from) && Number.isInteger(to) && from >= 0 && to <= 2 * dims.L && from < to))
    throw new Error(`units [${from}, ${to}) are not a sublayer range of ${dims.L} layers`);
  if (Math.floor(from / 2) !== s.first || Math.ceil(to / 2) !== s.last)
    throw new Error(
      `units [${from}, ${to}) touch layers [${Math.floor(from / 2)}, ${Math.ceil(to / 2)}), not [${s.first}, ${s.last})`,
    );
  const mixers = new Set(mixerLayers(s));
  const kvIn = s.kvIn ?? [];
  const read = new Set<number>();
  for (const i of mixers) {
    const kv = dims.layers[i]!.kv;
    if (kv.kind !== 'consumer') continue;
    read.add(kv.producer);
    if (!mixers.has(kv.producer) && !kvIn.includes(kv.producer))
      throw new Error(
        `stage [${s.first}, ${s.last}) splits layer ${i} from its KV producer ${kv.producer} (not in kvIn)`,
      );
  }
  for (const p of kvIn)
    if (dims.layers[p]?.kv.kind !== 'producer' || mixers.has(p) || !read.has(p))
      throw new Error(`kvIn ${p}: not a KV producer outside the stage that a consumer in it reads`);
  for (const p of s.kvOut ?? [])
    if (dims.layers[p]?.kv.kind !== 'producer' || !mixers.has(p))
      throw new Error(`kvOut ${p}: not a KV producer whose mixer is in the stage`);
}

function checkSlice(dims: HymbaDims, s: StageSpec, slice: SliceSpec): void {
  const { part, parts } = slice;
  const size = slice.kind === 'mlp' ? dims.I : dims.V;
  if (!(Number.isInteger(parts) && parts >= 1 && parts <= size && Number.isInteger(part) && part >= 0 && part < parts))
    throw new Error(`slice part ${part} of ${parts} is invalid`);
  if (s.embed || s.head || s.units || s.kvIn?.length || s.kvOut?.length)
    throw new Error('a slice stage holds nothing but its slice');
  if (slice.kind === 'mlp') {
    if (!(Number.isInteger(slice.layer) && slice.layer >= 0 && slice.layer < dims.L))
      throw new Error(`MLP slice of layer ${slice.layer} is outside the model`);
    if (s.first !== slice.layer || s.last !== slice.layer + 1)
      throw new Error(`MLP slice of layer ${slice.layer} must have first ${slice.layer}, last ${slice.layer + 1}`);
  }
}

export function buildStageGraph(model: ModelConfig, w: WeightMap, stage: StageSpec, opts: GraphOptions): GraphBuilder {
  const { dims } = model;
  checkStage(dims, stage);
  if (stage.slice) return sliceGraph(dims, w, stage.slice, opts);
  const b = new GraphBuilder();
  const position = b.input('position', ['B'], DataType.INT64);
  // the batch's input as rows [R, H], R = B*T
  const input = stage.embed
    ? b.input('input_ids', ['B', 'T'], DataType.INT64)
    : b.input('hidden_in', ['B', 'T', dims.H]);
  const ctx = runContext(b, dims, b.dim(input, 0), b.dim(input, 1), position);
  for (const p of stage.kvIn ?? []) b.within(`mirror${p}`, () => mirrorKv(b, dims, p, ctx));
  let x = stage.embed ? embed(b, dims, w, b.reshape(input, [-1]), opts) : b.reshape(input, [-1, dims.H]);
  const { from, to } = stageUnits(stage);
  for (let u = from; u < to; u++) {
    const i = u >> 1;
    x = b.within(`layer${i}`, () =>
      u % 2 === 0 ? mixerBlock(b, dims, w, i, x, ctx, opts) : b.within('mlp', () => mlpBlock(b, dims, w, i, x, opts)),
    );
  }
  if (stage.head) b.output(lmHead(b, dims, w, x, ctx, opts), 'logits', ['R', dims.V]);
  else b.output(toBT(b, ctx, x, [dims.H]), 'hidden_out', ['B', 'T', dims.H]);
  return b;
}

/** A slice stage: one share of an MLP block, of the embedding or of the head; no position, no state. */
function sliceGraph(d: HymbaDims, w: WeightMap, slice: SliceSpec, opts: GraphOptions): GraphBuilder {
  const b = new GraphBuilder();
  switch (slice.kind) {
    case 'mlp': {
      const input = b.input('hidden_in', ['B', 'T', d.H]);
      const x = b.reshape(input, [-1, d.H]);
      const cols = sliceRange(d.I, slice.part, slice.parts);
      const y = b.within(`layer${slice.layer}`, () =>
        b.within('mlp', () => mlpBranch(b, d, w, slice.layer, x, opts, cols)),
      );
      b.output(b.op('Reshape', [y, b.op('Shape', [input])]), 'hidden_out', ['B', 'T', d.H]);
      break;
    }
    case 'embed': {
      const input = b.input('input_ids', ['B', 'T'], DataType.INT64);
      const rows = sliceRange(d.V, slice.part, slice.parts);
      const x = embedSlice(b, d, w, b.reshape(input, [-1]), opts, rows, slice.part === 0);
      const shape = b.concat([b.op('Shape', [input]), b.ints([d.H])], 0);
      b.output(b.op('Reshape', [x, shape]), 'hidden_out', ['B', 'T', d.H]);
      break;
    }
    case 'head': {
      const input = b.input('hidden_in', ['B', 'T', d.H]);
      const rows = sliceRange(d.V, slice.part, slice.parts);
      b.output(headRows(b, d, w, input, opts, rows), 'logits', ['R', rows[1] - rows[0]]);
      break;
    }
  }
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
  rows: [number, number] = [0, d.V],
): { codes: string; scales: string } {
  // one scale per vocabulary row (q4: per row and block of H): quantising rows [lo, hi) alone is exact
  return b.once(`table:${TABLE}`, () => {
    const t = tableRows(w, d, rows);
    const n = rows[1] - rows[0];
    return dtype === 'int8'
      ? int8Initializers(b, TABLE, quantizeInt8(t, n, d.H))
      : q4ToInt8(b, TABLE, quantizeQ4(t, n, d.H));
  });
}

/** Rows [lo, hi) of the tied table [V, H] (the whole table: the stored array itself). */
function tableRows(w: WeightMap, d: HymbaDims, [lo, hi]: [number, number]): Float32Array {
  const t = weight(w, TABLE).data;
  return lo === 0 && hi === d.V ? t : t.subarray(lo * d.H, hi * d.H);
}

/** The token table's lookup: ids [R] (all in [lo, hi)) -> rows [R, H]. Its weights are created here, once. */
function tokenTable(
  b: GraphBuilder,
  d: HymbaDims,
  w: WeightMap,
  opts: GraphOptions,
  rows: [number, number] = [0, d.V],
): (ids: string) => string {
  if (opts.dtype === 'int8' || opts.dtype === 'q4') {
    const { codes, scales } = quantizedTable(b, d, w, opts.dtype, rows);
    return (ids) => {
      const cols = b.cast(b.op('Gather', [codes, ids], { axis: 1 }), DataType.FLOAT); // [H, R]
      return b.mul(b.transpose(cols, [1, 0]), b.unsqueeze(b.op('Gather', [scales, ids], { axis: 0 }), [1]));
    };
  }
  const table = b.weight(TABLE, [rows[1] - rows[0], d.H], tableRows(w, d, rows), opts.dtype);
  return (ids) => b.op('Gather', [table, ids], { axis: 0 });
}

/** x = [meta tokens ; embed(ids)] expressed as one gather: ids [R] >= V select meta rows. */
function embed(b: GraphBuilder, d: HymbaDims, w: WeightMap, ids: string, opts: GraphOptions): string {
  const lookup = tokenTable(b, d, w, opts);
  if (d.M === 0) return lookup(ids);
  const metaData = weight(w, 'model.memory_tokens').data;
  const meta = b.weight('model.memory_tokens', [d.M, d.H], metaData, floatDtype(opts.dtype));
  const V = b.ints([d.V], true);
  const isMeta = b.op('GreaterOrEqual', [ids, V]); // [R]
  const zero = b.ints([0], true);
  const tokenRow = lookup(b.op('Where', [isMeta, zero, ids])); // [R, H]
  const metaRow = b.op('Gather', [meta, b.op('Where', [isMeta, b.sub(ids, V), zero])], { axis: 0 }); // [R, H]
  return b.op('Where', [b.unsqueeze(isMeta, [1]), metaRow, tokenRow]);
}

/**
 * Vocabulary rows [lo, hi) of the embedding: ids [R] -> rows [R, H], zeros for ids outside; with `meta`,
 * ids >= V select meta rows as in embed(). Each id is owned by exactly one part, so the parts sum exactly.
 */
function embedSlice(
  b: GraphBuilder,
  d: HymbaDims,
  w: WeightMap,
  ids: string,
  opts: GraphOptions,
  [lo, hi]: [number, number],
  meta: boolean,
): string {
  const lookup = tokenTable(b, d, w, opts, [lo, hi]);
  const zero = b.ints([0], true);
  const owned = b.op('And', [
    b.op('GreaterOrEqual', [ids, b.ints([lo], true)]),
    b.op('Less', [ids, b.ints([hi], true)]),
  ]); // [R]
  const local = b.op('Where', [owned, b.sub(ids, b.ints([lo], true)), zero]);
  let rows = b.op('Where', [b.unsqueeze(owned, [1]), lookup(local), b.float(0)]); // [R, H]
  if (meta && d.M > 0) {
    const metaData = weight(w, 'model.memory_tokens').data;
    const table = b.weight('model.memory_tokens', [d.M, d.H], metaData, floatDtype(opts.dtype));
    const V = b.ints([d.V], true);
    const isMeta = b.op('GreaterOrEqual', [ids, V]);
    const metaRow = b.op('Gather', [table, b.op('Where', [isMeta, b.sub(ids, V), zero])], { axis: 0 });
    rows = b.op('Where', [b.unsqueeze(isMeta, [1]), metaRow, rows]);
  }
  return rows;
}

/** Positions of the new tokens and their RoPE tables (angles in fp32, as the reference computes them). */
function runContext(b: GraphBuilder, d: HymbaDims, Bs: string, T: string, position: string): RunContext {
  const steps = b.op('Range', [b.ints([0], true), b.squeeze(T, [0]), b.ints([1], true)]); // [T]
  const p = b.unsqueeze(position, [1]); // [B, 1]
  const qPos = b.add(p, b.unsqueeze(steps, [0])); // [B, T]
  const invFreq = b.weight('rope.inv_freq', [1, 1, d.dqk / 2], ropeInvFreq(d), 'f32');
  const angle = b.mul(b.unsqueeze(b.cast(qPos, DataType.FLOAT), [2]), invFreq); // [B, T, dqk/2]
  const full = b.unsqueeze(b.concat([angle, angle], 2), [2]); // [B, T, 1, dqk]
  return { Bs, T, position: p, qPos, cos: b.op('Cos', [full]), sin: b.op('Sin', [full]), kv: new Map() };
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

/**
 * A Hymba layer's first residual block, its mixer: attention heads and SSM heads in parallel on the same
 * normalised input, their outputs normalised, averaged and projected back onto the residual stream.
 * (The second block is the MLP, mlpBlock.)
 */
function mixerBlock(
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
  const h = rmsNorm(b, x, vector(b, w, `${p}input_layernorm.weight`), d.eps); // [R, H]
  const P = linear(b, w, `${p}mamba.in_proj.weight`, h, opts); // [R, rows]
  const widths = producer ? [d.H, d.kHidden, d.vHidden, d.dIn, d.dIn] : [d.H, d.dIn, d.dIn];
  const parts = b.split(P, 1, widths);
  const [q, u, z] = producer ? [parts[0]!, parts[3]!, parts[4]!] : [parts[0]!, parts[1]!, parts[2]!];
  if (producer) b.within('kv', () => updateKv(b, d, i, parts[1]!, parts[2]!, ctx));
  const kvOf = role.kv.kind === 'producer' ? i : role.kv.producer;
  const attn = b.within('attention', () => attentionBranch(b, d, q, ctx.kv.get(kvOf)!, ctx)); // [R, d_in]
  const m = b.within('ssm', () => ssmBranch(b, d, w, i, u, z, ctx, opts)); // [R, d_in]
  return b.within('fuse', () => fuse(b, d, w, i, x, attn, m, opts));
}

/** Rotate-half RoPE over the full head width: x*cos + rotate_half(x)*sin, x [B, T, heads, dqk]. */
function rope(b: GraphBuilder, d: HymbaDims, x: string, ctx: RunContext): string {
  const [x1, x2] = b.split(x, 3, [d.dqk / 2, d.dqk / 2]) as [string, string];
  const rotated = b.concat([b.op('Neg', [x2]), x1], 3);
  return b.add(b.mul(x, ctx.cos), b.mul(rotated, ctx.sin));
}

/** Each session's entry count [B, 1] before the run (state.ts kvEntries), shared by the producers of the kind. */
function kvCountBefore(b: GraphBuilder, d: HymbaDims, ctx: RunContext, global: boolean): string {
  return b.once(`kvCountBefore:${global}`, () => {
    if (global) return ctx.position;
    const M = b.ints([d.M], true);
    const recent = b.op('Min', [b.op('Max', [b.sub(ctx.position, M), b.ints([0], true)]), b.ints([d.W], true)]);
    return b.add(b.op('Min', [ctx.position, M]), recent);
  });
}

/**
 * A producer's K/V for this run's attention: past K/V [B, kv, S, d] (each session's meta entries, then its
 * window or all earlier keys, then padding) with the new rotated keys appended at S. Only the new entries
 * are outputs: appending them to the stored cache (and dropping what leaves the window) is the caller's.
 */
function updateKv(b: GraphBuilder, d: HymbaDims, i: number, kNew: string, vNew: string, ctx: RunContext): void {
  const names = stateNames(i);
  const k = b.transpose(rope(b, d, toBT(b, ctx, kNew, [d.kvHeads, d.dqk]), ctx), [0, 2, 1, 3]); // [B, kv, T, dqk]
  const v = b.transpose(toBT(b, ctx, vNew, [d.kvHeads, d.dv]), [0, 2, 1, 3]); // [B, kv, T, dv]
  b.output(k, `${names.key}_out`, ['B', d.kvHeads, 'T', d.dqk]);
  b.output(v, `${names.value}_out`, ['B', d.kvHeads, 'T', d.dv]);
  attachKv(b, d, i, k, v, ctx);
}

/**
 * A mirrored producer p: its new entries come in as inputs (exactly what p's stage output), the stage's own
 * copy of p's cache as the usual past K/V; its consumers here attend over them as if p were here.
 */
function mirrorKv(b: GraphBuilder, d: HymbaDims, p: number, ctx: RunContext): void {
  const names = mirrorNames(p);
  const k = b.input(names.key, ['B', d.kvHeads, 'T', d.dqk]);
  const v = b.input(names.value, ['B', d.kvHeads, 'T', d.dv]);
  attachKv(b, d, p, k, v, ctx);
}

/** Producer i's K/V for this run: its past cache (input key.i/value.i) with the new entries appended. */
function attachKv(b: GraphBuilder, d: HymbaDims, i: number, k: string, v: string, ctx: RunContext): void {
  const names = stateNames(i);
  const pastK = b.input(names.key, ['B', d.kvHeads, `S${i}`, d.dqk]);
  const pastV = b.input(names.value, ['B', d.kvHeads, `S${i}`, d.dv]);
  const key = b.concat([pastK, k], 2); // [B, kv, S+T, dqk]
  const value = b.concat([pastV, v], 2); // [B, kv, S+T, dv]
  const global = d.layers[i]!.attention === 'global';
  ctx.kv.set(i, { key, value, mask: attentionMask(b, d, pastK, ctx, global) });
}

/**
 * Additive mask [B, 1, 1, T, S+T] from absolute positions. Stored entry j < M is meta token j; later stored
 * entries are the keys just before `position`; entries past the session's count are padding (never seen).
 * Allowed iff key <= query and (global or query-key <= W or key < M).
 */
function attentionMask(b: GraphBuilder, d: HymbaDims, pastK: string, ctx: RunContext, global: boolean): string {
  const S = b.dim(pastK, 2);
  const idx = b.op('Range', [b.ints([0], true), b.squeeze(S, [0]), b.ints([1], true)]); // [S]
  const count = kvCountBefore(b, d, ctx, global); // [B, 1]
  const recent = b.add(b.sub(ctx.position, count), idx); // [B, S]: position - count + j
  const M = b.ints([d.M], true);
  const real = b.op('Where', [b.op('Less', [idx, M]), idx, recent]);
  // padding gets a position after every query, so the causal test below excludes it
  const pastPos = b.op('Where', [b.op('Less', [idx, count]), real, b.ints([2 ** 40], true)]); // [B, S]
  const kPos = b.concat([pastPos, ctx.qPos], 1); // [B, S+T]
  const diff = b.sub(b.unsqueeze(ctx.qPos, [2]), b.unsqueeze(kPos, [1])); // [B, T, S+T]
  let allowed = b.op('GreaterOrEqual', [diff, b.ints([0], true)]);
  if (!global) {
    const inWindow = b.op('LessOrEqual', [diff, b.ints([d.W], true)]);
    const isMeta = b.unsqueeze(b.op('Less', [kPos, M]), [1]);
    allowed = b.op('And', [allowed, b.op('Or', [inWindow, isMeta])]);
  }
  return b.unsqueeze(b.op('Where', [allowed, b.float(0), b.float(-1e30)]), [1, 2]);
}

/** Grouped-query attention: head h reads KV head floor(h / g); output [R, heads*dv] = [R, d_in]. */
function attentionBranch(
  b: GraphBuilder,
  d: HymbaDims,
  qFlat: string,
  kv: { key: string; value: string; mask: string },
  ctx: RunContext,
): string {
  const g = d.heads / d.kvHeads;
  const q = rope(b, d, toBT(b, ctx, qFlat, [d.heads, d.dqk]), ctx); // [B, T, heads, dqk]
  const qs = b.mul(q, b.float(1 / Math.sqrt(d.dqk)));
  const grouped = b.transpose(b.reshape(qs, [0, 0, d.kvHeads, g, d.dqk]), [0, 2, 3, 1, 4]); // [B, kv, g, T, dqk]
  const qg = b.reshape(grouped, [0, 0, -1, d.dqk]); // [B, kv, g*T, dqk]
  const scores = b.matmul(qg, b.transpose(kv.key, [0, 1, 3, 2])); // [B, kv, g*T, S+T]
  const keys = b.dim(kv.key, 2); // S+T
  const masked = b.add(b.reshapeTo(scores, [0, 0, g, -1, keys]), kv.mask); // [B, kv, g, T, S+T]
  const probs = b.op('Softmax', [masked], { axis: -1 });
  const out = b.matmul(b.reshapeTo(probs, [0, 0, -1, keys]), kv.value); // [B, kv, g*T, dv]
  const heads = b.transpose(b.reshape(out, [0, 0, g, -1, d.dv]), [0, 3, 1, 2, 4]); // [B, T, kv, g, dv]
  return b.reshape(heads, [-1, d.heads * d.dv]);
}

/** The Mamba branch: causal conv, input-dependent delta/B/C, selective scan, gate. */
function ssmBranch(
  b: GraphBuilder,
  d: HymbaDims,
  w: WeightMap,
  i: number,
  u: string,
  z: string,
  ctx: RunContext,
  opts: GraphOptions,
): string {
  const p = `${layerPrefix(i)}mamba.`;
  const names = stateNames(i);
  const uc = b.silu(causalConv(b, d, w, i, u, ctx)); // [R, d_in]
  const [dtRaw, Braw, Craw] = b.split(linear(b, w, `${p}x_proj.0.weight`, uc, opts), 1, [
    d.dtRank,
    d.dState,
    d.dState,
  ]) as [string, string, string];
  const dt = rmsNorm(b, dtRaw, vector(b, w, `${p}dt_layernorm.weight`), d.eps); // [R, dt_rank]
  const B = rmsNorm(b, Braw, vector(b, w, `${p}B_layernorm.weight`), d.eps); // [R, N]
  const C = rmsNorm(b, Craw, vector(b, w, `${p}C_layernorm.weight`), d.eps); // [R, N]
  const delta = b.op('Softplus', [
    b.add(linear(b, w, `${p}dt_proj.0.weight`, dt, opts), vector(b, w, `${p}dt_proj.0.bias`)),
  ]); // [R, d_in]
  const Alog = weight(w, `${p}A_log.0`);
  const A = b.weight(
    `${p}A`,
    Alog.dims,
    Alog.data.map((v) => -Math.exp(v)),
    'f32',
  ); // [d_in, N]
  const delta3 = b.unsqueeze(delta, [2]); // [R, d_in, 1]
  const decay = b.exp(b.mul(delta3, A)); // [R, d_in, N]
  const drive = b.mul(b.mul(delta3, b.unsqueeze(uc, [2])), b.unsqueeze(B, [1])); // [R, d_in, N]
  const s0 = b.input(names.ssm, ['B', d.dIn, d.dState]);
  const [states, last] = selectiveScan(b, d, decay, drive, s0, ctx, opts); // [R, d_in, N], [B, d_in, N]
  b.output(last, `${names.ssm}_out`, ['B', d.dIn, d.dState]);
  const y = b.squeeze(b.matmul(states, b.unsqueeze(C, [2])), [2]); // [R, d_in] = sum_n C[n] s[c, n]
  const withSkip = b.add(y, b.mul(uc, vector(b, w, `${p}D.0`)));
  return b.mul(withSkip, b.silu(z));
}

/** Depthwise causal conv over [conv state ; u] per session; the new state is the last d_conv-1 inputs. */
function causalConv(b: GraphBuilder, d: HymbaDims, w: WeightMap, i: number, u: string, ctx: RunContext): string {
  const p = `${layerPrefix(i)}mamba.`;
  const names = stateNames(i);
  const past = b.input(names.conv, ['B', d.dConv - 1, d.dIn]);
  const xs = b.concat([past, toBT(b, ctx, u, [d.dIn])], 1); // [B, d_conv-1+T, d_in]
  b.output(b.slice(xs, 1, -(d.dConv - 1), TO_END), `${names.conv}_out`, ['B', d.dConv - 1, d.dIn]);
  const kernel = weight(w, `${p}conv1d.weight`);
  const k = b.weight(`${p}conv1d.weight`, kernel.dims, kernel.data, 'f32');
  const y = b.op('Conv', [b.transpose(xs, [0, 2, 1]), k, vector(b, w, `${p}conv1d.bias`)], {
    group: d.dIn,
    kernel_shape: [d.dConv],
  }); // [B, d_in, T]: the sessions are Conv's batch
  return b.reshape(b.transpose(y, [0, 2, 1]), [-1, d.dIn]);
}

/**
 * s_t = a_t * s_{t-1} + b_t for every t of the run, a and b as rows [R, d_in, N], s0 [B, d_in, N]. One token
 * per session (T = 1, decode, any B) is a single update; longer runs use the parallel scan below instead of a
 * per-position op chain. Returns the states [R, d_in, N] and each session's last one [B, d_in, N].
 */
export function selectiveScan(
  b: GraphBuilder,
  d: HymbaDims,
  a: string,
  bb: string,
  s0: string,
  ctx: RunContext,
  opts: GraphOptions,
): [string, string] {
  const oneToken = b.op('Equal', [ctx.T, b.ints([1])]);
  const sessionShape = shapeBT(b, ctx, [d.dIn, d.dState]); // created out here: the branches only read it
  const [states, last] = b.ifElse(
    oneToken,
    (s) => {
      const next = s.add(s.mul(a, s0), bb); // R = B rows line up with the sessions
      return [next, next];
    },
    (s) => {
      const perSession = (x: string): string => s.op('Reshape', [x, sessionShape]); // [B, T, d_in, N]
      const scanned = parallelScan(s, d, perSession(a), perSession(bb), s0, ctx.T, opts);
      return [s.reshape(scanned, [-1, d.dIn, d.dState]), s.squeeze(s.slice(scanned, 1, -1, TO_END), [1])];
    },
  );
  return [states!, last!];
}

/**
 * The scan for T > 1 in two levels over (a, b) pairs [B, T, d_in, N], composed as
 * (a2, b2) o (a1, b1) = (a2 a1, a2 b1 + b2):
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
  const padPairs = b.concat([b.ints([0, 0, 0, 0, 0]), padLen, b.ints([0, 0])], 0); // [begins..., ends...]: end of axis 1
  const toChunks = (x: string, fill: number): string[] =>
    b.split(
      b.reshapeTo(b.op('Pad', [x, padPairs, b.float(fill)]), [0, nC, Q, d.dIn, d.dState]),
      2,
      new Array<number>(Q).fill(1),
    ); // Q x [B, nC, 1, d_in, N]
  const as = toChunks(a, 1);
  const bs = toChunks(bb, 0);
  const prefixA = [as[0]!];
  const prefixB = [bs[0]!];
  for (let i = 1; i < Q; i++) {
    prefixA.push(b.mul(as[i]!, prefixA[i - 1]!));
    prefixB.push(b.add(b.mul(as[i]!, prefixB[i - 1]!), bs[i]!));
  }
  // carry across chunks: cumulative (a, b) of each chunk's total
  let A2 = b.squeeze(prefixA[Q - 1]!, [2]); // [B, nC, d_in, N]
  let B2 = b.squeeze(prefixB[Q - 1]!, [2]);
  for (let s = 0, off = 1; s < carrySteps; s++, off *= 2) [A2, B2] = scanStep(b, A2, B2, 1, off, 4, nC);
  const start = b.unsqueeze(s0, [1]); // [B, 1, d_in, N]
  const ends = b.add(b.mul(A2, start), B2); // state after each chunk [B, nC, d_in, N]
  const entering = b.unsqueeze(b.slice(b.concat([start, ends], 1), 1, 0, nC), [2]); // [B, nC, 1, d_in, N]
  const states = prefixA.map((pa, i) => b.add(b.mul(pa, entering), prefixB[i]!)); // Q x [B, nC, 1, d_in, N]
  return b.slice(b.reshape(b.concat(states, 2), [0, -1, d.dIn, d.dState]), 1, 0, T); // [B, T, d_in, N]
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

/** A Hymba layer's second residual block, the gated MLP: x + down(SiLU(gate n) * up n), n = RMSNorm(x). */
function mlpBlock(b: GraphBuilder, d: HymbaDims, w: WeightMap, i: number, x: string, opts: GraphOptions): string {
  return b.add(x, mlpBranch(b, d, w, i, x, opts, [0, d.I]));
}

/**
 * down_k(SiLU(gate_k n) * up_k n) over intermediate columns [lo, hi) (all of them: the MLP without its
 * residual), gate and up fused into one matmul. gate/up rows and int8/q4 scales are per intermediate column,
 * so slicing them is exact; down_proj's scales are per output row over all I inputs, so a down slice is
 * quantised whole first, then its columns taken.
 */
function mlpBranch(
  b: GraphBuilder,
  d: HymbaDims,
  w: WeightMap,
  i: number,
  x: string,
  opts: GraphOptions,
  [lo, hi]: [number, number],
): string {
  const p = layerPrefix(i);
  const n = rmsNorm(b, x, vector(b, w, `${p}pre_moe_layernorm.weight`), d.eps);
  const gate = weight(w, `${p}moe.experts.0.gate_proj.weight`);
  const up = weight(w, `${p}moe.experts.0.up_proj.weight`);
  const Ik = hi - lo;
  const both = new Float32Array(2 * Ik * d.H);
  both.set(gate.data.subarray(lo * d.H, hi * d.H), 0);
  both.set(up.data.subarray(lo * d.H, hi * d.H), Ik * d.H);
  const gateUp = { dims: [2 * Ik, d.H], data: both };
  const fusedName = `${p}moe.experts.0.gate_up_proj.weight`;
  const [g, u] = b.split(linearOf(b, fusedName, gateUp, n, opts), 1, [Ik, Ik]) as [string, string];
  const hidden = b.mul(b.silu(g), u); // [R, Ik]
  const downName = `${p}moe.experts.0.down_proj.weight`;
  if (lo === 0 && hi === d.I) return linear(b, w, downName, hidden, opts);
  return downSlice(b, d, weight(w, downName), downName, hidden, opts, [lo, hi]);
}

/** Columns [lo, hi) of down_proj [H, I] applied to x [R, hi - lo]. */
function downSlice(
  b: GraphBuilder,
  d: HymbaDims,
  t: Tensor,
  name: string,
  x: string,
  opts: GraphOptions,
  [lo, hi]: [number, number],
): string {
  const Ik = hi - lo;
  if (opts.dtype === 'int8' || opts.dtype === 'q4') {
    // the unsliced stage's execution form: int8 per output row (q4 requantised whole, as on load), then columns
    const whole =
      opts.dtype === 'int8' ? quantizeInt8(t.data, d.H, d.I) : requantizeQ4ToInt8(quantizeQ4(t.data, d.H, d.I));
    const data = new Int8Array(d.H * Ik);
    for (let r = 0; r < d.H; r++) data.set(whole.data.subarray(r * d.I + lo, r * d.I + hi), r * Ik);
    return int8Linear(b, name, { rows: d.H, cols: Ik, data, scales: whole.scales }, x, quantExec(opts).int8);
  }
  const cols = new Float32Array(d.H * Ik);
  for (let r = 0; r < d.H; r++) cols.set(t.data.subarray(r * d.I + lo, r * d.I + hi), r * Ik);
  return linearOf(b, name, { dims: [d.H, Ik], data: cols }, x, opts);
}

/**
 * Final norm and the tied head on each session's rows [logits_from, T): logits = x E^T via Gemm(transB)
 * without a copy of E; int8/q4 models multiply by the int8 table E^T [H, V] that the embedding gathers from.
 */
function lmHead(b: GraphBuilder, d: HymbaDims, w: WeightMap, x: string, ctx: RunContext, opts: GraphOptions): string {
  return headRows(b, d, w, toBT(b, ctx, x, [d.H]), opts, [0, d.V]);
}

/** The head over hidden [B, T, H] for vocabulary rows [lo, hi) of the tied table: logits [R', hi - lo]. */
function headRows(
  b: GraphBuilder,
  d: HymbaDims,
  w: WeightMap,
  hidden: string,
  opts: GraphOptions,
  vocab: [number, number],
): string {
  const from = b.input('logits_from', [], DataType.INT64);
  const wanted = b.slice(hidden, 1, b.unsqueeze(from, [0]), TO_END); // [B, T - from, H]
  const rows = rmsNorm(b, b.reshape(wanted, [-1, d.H]), vector(b, w, 'model.final_layernorm.weight'), d.eps);
  if (opts.dtype === 'int8' || opts.dtype === 'q4') {
    const { codes, scales } = quantizedTable(b, d, w, opts.dtype, vocab);
    return int8MatMul(b, rows, codes, scales, quantExec(opts).int8);
  }
  const E = b.weight(TABLE, [vocab[1] - vocab[0], d.H], tableRows(w, d, vocab), opts.dtype);
  return b.op('Gemm', [rows, E], { transB: 1 });
}
