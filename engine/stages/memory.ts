// The byte model of a stage: what its weights take as the converter stores them, what ORT makes of them,
// the activation peak of one run, and the fp32 session state it holds. Pure arithmetic over the config.
//
// Estimated memory of a stage = ORT baseline + ORT factor x weight bytes as executed + activation peak of
//                               one run + (state copies a run makes + hot sessions) x state per session.
// Weight bytes are counted exactly as the converter stores them (emit.ts weightBytes); the other terms are
// measured constants (docs/stages.md), replaceable by `hymba plan --measure`.

import type { HymbaDims } from '../model/config.js';
import { sliceRange, stageUnits, type StageSpec } from './stage-spec.js';
import { Q4_BLOCK, type ModelDtype } from '../convert/quantize.js';
import { kvEntries } from '../state/state.js';
import { inProjRows } from '../model/weights.js';

/** Sizes are reported in decimal megabytes; the budget is too (128 MB = 128e6 bytes, a little under 128 MiB). */
export const MB = 1e6;

/**
 * WASM heap growth of ORT per byte of executed weights, after session creation (model bytes, the
 * initializers built from them, prepacked copies). Measured in fresh Node processes with `hymba plan
 * --measure` (infra/plan/stage-memory-child.ts) on a 4-layer Hymba-1.5B-shaped model cut into stages
 * [0] +embed, [1-2], [3] +head (docs/stages.md): the two-layer stage grew 3.13x at f32 and at int8 and
 * 5.09x at f16; the embedding stage less (f32 2.56x, int8 2.63x, f16 5.42x: a Gather needs no prepacked
 * copy), the head stage more (f32 3.46x, int8 2.86x, f16 5.60x). docs/engine.md found the same 3.13x at f32
 * and 2.67x at int8 for a single layer: the heap grows in steps, so a factor holds to about +-15%.
 * f16 costs more than f32 per stored byte: the FLOAT16 initializers stay beside their folded fp32 copy.
 * q4 runs as int8 (expanded on load), so it is counted with the int8 factor on its int8 bytes.
 */
export const ORT_FACTORS: Readonly<Record<ModelDtype, number>> = { f32: 3.13, f16: 5.4, int8: 3.13, q4: 3.13 };

/**
 * What an isolate holds before any weight: ORT's WASM heap after initialisation (16 MiB) plus the JS heap
 * of ORT's glue and the engine (11.5 MB: Node's heapUsed in the same fresh process; the Worker's bundle
 * is of the same order). Rounded up to 12 MB.
 */
export const ORT_BASELINE_BYTES = 16 * 1024 * 1024 + 12 * MB;

/**
 * Activation peak of one run, per element of the scan's [T, d_in, N] tensors: the parallel scan keeps a few
 * fp32 intermediates of that size alive at once, and WASM memory never shrinks, so the peak stays. One
 * 128-token run grew the heap of a Hymba-1.5B int8 layer by 105 MB (docs/engine.md: 2.67x -> 4.9x of 47 MB;
 * 16 bytes per element) and of a two-layer int8 stage by 61 MB (9.4 bytes); the larger is kept. Shorter runs
 * are assumed to scale linearly in T (13 MB at 16 tokens): extrapolated from the 128-token measurement.
 */
export const ACTIVATION_BYTES_PER_SCAN_ELEMENT = 16;

/**
 * Activation peak of a stage without a mixer (MLP blocks or slices, the embedding, the head), in fp32 copies
 * of its widest row per token: the MLP's [T, 2 x its columns] gate/up product, its quantised and cast
 * copies, the SiLU product. An estimate, not a measurement; small beside the weights at 16-128 tokens.
 * The head's logits are not counted: generation asks for one row per session.
 */
export const ROW_ACTIVATION_COPIES = 3;

/**
 * Copies of one session's state a run holds in the WASM heap: the inputs copied in, the K/V with the new
 * entries appended, and its transposes. A decode step at 8184 tokens grew the tiny int8 model's heap by
 * 1.1x-2.3x its state (`hymba plan --measure`, before and after the batched graph layout); the estimate counts the worst run, a full-length run late in
 * the longest conversation, so this adds to the activation peak.
 */
export const RUN_STATE_COPIES = 2.5;

// ---------------------------------------------------------------- weight bytes, as the converter stores them

/** Bytes of one large [rows, cols] matrix (rows = output channels) in the model's weight format. */
export function matrixBytes(rows: number, cols: number, dtype: ModelDtype): number {
  switch (dtype) {
    case 'f32':
      return rows * cols * 4;
    case 'f16':
      return rows * cols * 2;
    case 'int8':
      return rows * cols + rows * 4; // codes + one fp32 scale per output row
    case 'q4': {
      const blocks = Math.ceil(cols / Q4_BLOCK);
      // packed codes, one fp32 scale per block, zero points two a byte, and the int64 column count
      return rows * blocks * (Q4_BLOCK / 2) + rows * blocks * 4 + rows * Math.ceil(blocks / 2) + 8;
    }
  }
}

/** Weight bytes of layer i's mixer block: input norm, in_proj, conv, x_proj, dt_proj, A, D, branch norms, out_proj. */
export function mixerWeightBytes(d: HymbaDims, i: number, dtype: ModelDtype): number {
  const matrices: [number, number][] = [
    [inProjRows(d, i), d.H],
    [d.dtRank + 2 * d.dState, d.dIn], // x_proj
    [d.dIn, d.dtRank], // dt_proj
    [d.H, d.dIn], // out_proj
  ];
  // fp32 in every dtype: input norm, dt/B/C norms, pre_avg 1 and 2, conv w and b, dt bias, A, D
  const norms = d.H + d.dtRank + 2 * d.dState + 2 * d.dIn;
  const fp32 = norms + d.dIn * d.dConv + d.dIn + d.dIn + d.dIn * d.dState + d.dIn;
  return matrices.reduce((n, [r, c]) => n + matrixBytes(r, c, dtype), 0) + fp32 * 4;
}

/**
 * Weight bytes of an MLP block over `cols` of its I intermediate columns (all of them, or one slice): the
 * pre-MLP norm (every slice has its own copy), gate and up fused into [2 cols, H], down [H, cols]. A q4
 * slice stores its down columns as int8 (cut from the whole matrix's int8 form, so each slice repeats the
 * H per-row scales; so does an int8 slice).
 */
export function mlpWeightBytes(d: HymbaDims, cols: number, dtype: ModelDtype, sliced = cols !== d.I): number {
  const down = matrixBytes(d.H, cols, sliced && dtype === 'q4' ? 'int8' : dtype);
  return d.H * 4 + matrixBytes(2 * cols, d.H, dtype) + down;
}

/** Weight bytes of layer i as stored in a stage graph: its mixer and its whole MLP. */
export function layerWeightBytes(d: HymbaDims, i: number, dtype: ModelDtype): number {
  return mixerWeightBytes(d, i, dtype) + mlpWeightBytes(d, d.I, dtype);
}

/** Bytes of the meta tokens: 16-bit in f16 models, else fp32. */
const metaBytes = (d: HymbaDims, dtype: ModelDtype): number => d.M * d.H * (dtype === 'f16' ? 2 : 4);

/** The embedding's own bytes: the tied token table and the meta tokens (16-bit in f16 models, else fp32). */
export function embedWeightBytes(d: HymbaDims, dtype: ModelDtype): number {
  return matrixBytes(d.V, d.H, dtype) + metaBytes(d, dtype);
}

/** The head's own bytes: the final norm and the tied table (stored once when the embedding is in the stage). */
export function headWeightBytes(d: HymbaDims, dtype: ModelDtype): number {
  return d.H * 4 + matrixBytes(d.V, d.H, dtype);
}

/** What a stage holds, at sub-layer granularity. */
export interface StageContent {
  /** layers whose mixer block the stage runs */
  mixers: number[];
  /** MLP blocks: the whole block (cols = I) or one slice of it (sliced: true) */
  mlps: { layer: number; cols: number; sliced: boolean }[];
  /** vocabulary rows of the embedding table here (0: no embedding) */
  embedRows: number;
  /** the meta tokens (with the whole embedding or its first slice) */
  meta: boolean;
  /** vocabulary rows of the head (0: no head) */
  headRows: number;
  /** the whole embedding and the whole head share one stored table */
  sharedTable: boolean;
  /** producers whose K/V the stage mirrors */
  kvIn: number[];
}

export function stageContent(d: HymbaDims, s: StageSpec): StageContent {
  const none: StageContent = {
    mixers: [],
    mlps: [],
    embedRows: 0,
    meta: false,
    headRows: 0,
    sharedTable: false,
    kvIn: [],
  };
  if (s.slice) {
    const { part, parts } = s.slice;
    const rows = (size: number): number => {
      const [lo, hi] = sliceRange(size, part, parts);
      return hi - lo;
    };
    switch (s.slice.kind) {
      case 'mlp':
        return { ...none, mlps: [{ layer: s.slice.layer, cols: rows(d.I), sliced: true }] };
      case 'embed':
        return { ...none, embedRows: rows(d.V), meta: part === 0 && d.M > 0 };
      case 'head':
        return { ...none, headRows: rows(d.V) };
    }
  }
  const { from, to } = stageUnits(s);
  const c: StageContent = { ...none, kvIn: [...(s.kvIn ?? [])] };
  for (let u = from; u < to; u++)
    if (u % 2 === 0) c.mixers.push(u / 2);
    else c.mlps.push({ layer: (u - 1) / 2, cols: d.I, sliced: false });
  if (s.embed) [c.embedRows, c.meta] = [d.V, d.M > 0];
  if (s.head) c.headRows = d.V;
  c.sharedTable = s.embed && s.head;
  return c;
}

/**
 * Weight bytes of a stage graph exactly as the converter records them (manifest `weightBytes`): its mixer
 * and MLP blocks (or slice), the embedding and/or head (or their vocabulary slice), the RoPE table of every
 * stage but a slice, and the 1-byte uint8 constants the quantised graphs store as initializers (128 for the
 * int8 activation zero point of any matmul; 15 and 4 for q4 nibbles).
 */
export function stageWeightBytes(d: HymbaDims, s: StageSpec, dtype: ModelDtype): number {
  const c = stageContent(d, s);
  let n = s.slice ? 0 : (d.dqk / 2) * 4; // rope.inv_freq
  for (const i of c.mixers) n += mixerWeightBytes(d, i, dtype);
  for (const m of c.mlps) n += mlpWeightBytes(d, m.cols, dtype, m.sliced);
  if (c.embedRows > 0) n += matrixBytes(c.embedRows, d.H, dtype) + (c.meta ? metaBytes(d, dtype) : 0);
  if (c.headRows > 0) n += d.H * 4 + (c.sharedTable ? 0 : matrixBytes(c.headRows, d.H, dtype));
  const matmul = c.mixers.length > 0 || c.mlps.length > 0 || c.headRows > 0;
  if (dtype === 'int8' && matmul) n += 1;
  if (dtype === 'q4') n += 2 + (matmul ? 1 : 0);
  return n;
}

/** The format ORT runs: q4 is expanded to int8 on load; the others run as stored (f16 is widened inside). */
export const execDtype = (dtype: ModelDtype): ModelDtype => (dtype === 'q4' ? 'int8' : dtype);

// ---------------------------------------------------------------- session state

/** In-memory (fp32) K/V of producer p after `tokens` text tokens. */
export function kvBytes(d: HymbaDims, p: number, tokens: number): number {
  return kvEntries(d, p, d.M + tokens) * d.kvHeads * (d.dqk + d.dv) * 4;
}

/** In-memory (fp32) state of layer i after `tokens` text tokens: conv, SSM, and a producer's K/V. */
export function layerStateBytes(d: HymbaDims, i: number, tokens: number): number {
  const conv = (d.dConv - 1) * d.dIn;
  const ssm = d.dIn * d.dState;
  const producer = d.layers[i]!.kv.kind === 'producer';
  return (conv + ssm) * 4 + (producer ? kvBytes(d, i, tokens) : 0);
}

export function stageStateBytes(d: HymbaDims, first: number, last: number, tokens: number): number {
  let n = 0;
  for (let i = first; i < last; i++) n += layerStateBytes(d, i, tokens);
  return n;
}

/** State of what a stage holds: its mixers' layers (conv, SSM, own K/V) and the K/V it mirrors. */
export function contentStateBytes(d: HymbaDims, c: StageContent, tokens: number): number {
  let n = 0;
  for (const i of c.mixers) n += layerStateBytes(d, i, tokens);
  for (const p of c.kvIn) n += kvBytes(d, p, tokens);
  return n;
}

/** The longest conversation a session may hold, in text tokens (positions count the meta tokens). */
export const maxContext = (d: HymbaDims): number => Math.max(1, d.maxPositions - d.M);

/** Activation peak of one run of `runTokens` tokens through a mixer (the scan's [T, d_in, N] intermediates). */
export const activationBytes = (d: HymbaDims, runTokens: number): number =>
  ACTIVATION_BYTES_PER_SCAN_ELEMENT * runTokens * d.dIn * d.dState;

/** Activation peak of one run through what a stage holds: the scan's with a mixer, else a few rows. */
export function contentActivationBytes(d: HymbaDims, c: StageContent, runTokens: number): number {
  const width = Math.max(d.H, ...c.mlps.map((m) => 2 * m.cols));
  const rows = ROW_ACTIVATION_COPIES * 4 * runTokens * width;
  return c.mixers.length > 0 ? Math.max(activationBytes(d, runTokens), rows) : rows;
}
