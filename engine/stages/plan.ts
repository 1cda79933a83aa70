// The stage planner: which parts of the model run together in one Durable Object, so that each stage fits
// its isolate's memory budget. Pure arithmetic over the config (no weights, no Node APIs): the CLI
// (`hymba plan`, `hymba convert --budget-mb`) and the benchmarks share it.
//
// Two granularities. Whole layers first: consecutive layer ranges, KV reuse groups kept together. When
// that cannot fit, sub-layer units: the embedding, each layer's mixer block (attention + SSM) and MLP
// block, the head; a consumer's mixer away from its producer's mirrors the producer's K/V; an MLP, the
// embedding or the head that does not fit alone is cut into slices that run in parallel.
//
// Estimated memory of a stage = ORT baseline + ORT factor x weight bytes as executed + activation peak of
//                               one run + (state copies a run makes + hot sessions) x state per session.
// Weight bytes are counted exactly as the converter stores them (emit.ts weightBytes); the other terms are
// measured constants (docs/stages.md), replaceable by `hymba plan --measure`.

import type { HymbaDims } from '../model/config.js';
import { DEFAULT_MAX_RUN_TOKENS, sliceRange, stageUnits, type StageSpec } from '../model/graph.js';
import { Q4_BLOCK, type ModelDtype } from '../convert/quantize.js';
import { kvEntries } from '../state/state.js';
import { inProjRows } from '../model/weights.js';

/** Sizes are reported in decimal megabytes; the budget is too (128 MB = 128e6 bytes, a little under 128 MiB). */
export const MB = 1e6;
export const DEFAULT_BUDGET_MB = 128;

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

/** Context lengths (text tokens) at which the plan reports how many sessions' state fit beside the weights. */
export const REPORT_CONTEXTS = [1024, 4096, 8192] as const;

/** Tokens per run the planner tries, largest first, when none is given: the largest that fits is kept. */
export const RUN_TOKEN_CHOICES = [128, 64, 32, 16] as const;

/** The most slices an MLP block, the embedding or the head is cut into before the planner gives up. */
export const MAX_SLICES = 64;

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

// ---------------------------------------------------------------- units and the plan

/** Layers [first, last) that must share a stage: a KV reuse group with everything between its members. */
export interface PlanUnit {
  first: number;
  last: number;
}

/** Layers in order, grouped so that no consumer is separated from its KV producer (checkStage's rule). */
export function atomicUnits(d: HymbaDims): PlanUnit[] {
  const units: PlanUnit[] = [];
  for (let i = 0; i < d.L; i++) {
    const kv = d.layers[i]!.kv;
    let first = kv.kind === 'consumer' ? kv.producer : i;
    // a consumer pulls every unit from its producer on into its own
    while (units.length > 0 && units[units.length - 1]!.last > first) first = Math.min(first, units.pop()!.first);
    units.push({ first, last: i + 1 });
  }
  return units;
}

export interface PlanOptions {
  dtype: ModelDtype;
  /** memory per isolate in MB (default 128) */
  budgetMb?: number;
  /** text tokens of a session's state that each stage must hold (default: the model's whole context) */
  contextTokens?: number;
  /** sessions whose state each stage keeps in memory at `contextTokens` (default 1) */
  hotSessions?: number;
  /** ORT heap per executed weight byte (default ORT_FACTORS[dtype]) */
  factor?: number;
  /** bytes before any weight (default ORT_BASELINE_BYTES) */
  baselineBytes?: number;
  /**
   * tokens per graph run (the converter's maxRunTokens), which sets the activation peak. planStages default:
   * the largest of RUN_TOKEN_CHOICES whose plan fits; estimateStages default: DEFAULT_MAX_RUN_TOKENS.
   */
  runTokens?: number;
  /** 'layers': whole layers only, as before sub-layer stages existed; default: sub-layer units when needed */
  granularity?: 'layers' | 'auto';
}

interface Resolved {
  dtype: ModelDtype;
  budgetBytes: number;
  contextTokens: number;
  hotSessions: number;
  factor: number;
  baselineBytes: number;
  runTokens: number;
}

export interface StagePlan extends StageSpec {
  /** weight bytes as stored in the stage graph (the manifest's weightBytes) */
  weightBytes: number;
  /** weight bytes ORT runs (q4: its int8 form) */
  execBytes: number;
  /** activation peak of one run of the plan's run tokens through this stage */
  activationBytes: number;
  /** baseline + factor x execBytes + activation peak: the stage before any session state */
  ortBytes: number;
  /** what a run at the plan's context adds: RUN_STATE_COPIES x stateBytesPerSession */
  runStateBytes: number;
  /** fp32 state of this stage's layers (and mirrored K/V) for one session at the plan's context */
  stateBytesPerSession: number;
  /** ortBytes + runStateBytes + hot sessions x stateBytesPerSession */
  estimatedBytes: number;
  overBudget: boolean;
  /** sequential step of a token's pass (sibling slices share one) */
  step: number;
  /**
   * how many sessions' state fit beside the weights, at the REPORT_CONTEXTS (clamped to the model's); null
   * for a stage without session state (any number fits)
   */
  sessionsThatFit: { context: number; sessions: number | null }[];
}

export interface ModelPlan {
  dtype: ModelDtype;
  budgetMb: number;
  contextTokens: number;
  hotSessions: number;
  factor: number;
  baselineBytes: number;
  /** tokens per graph run the activation estimate assumes: the maxRunTokens to convert with */
  runTokens: number;
  /** the activation peak of a stage with a mixer at runTokens */
  activationBytes: number;
  /** whole layers per stage, or sub-layer units (mixer / MLP blocks, slices, mirrors) */
  granularity: 'layers' | 'units';
  stages: StagePlan[];
  /** the stage specs to convert with (`convertCheckpoint`'s `stages`), one per stage */
  specs: StageSpec[];
  /** sequential steps of one token's pass (parallel slices count once) */
  steps: number;
  /** stage calls per token (each slice is a call of its own) */
  hops: number;
  /** why stages are over budget, one sentence each (empty when every stage fits) */
  problems: string[];
  /** the smallest budget (MB) at which every stage of such a plan could fit (at these run tokens and context) */
  minBudgetMb: number;
  fits: boolean;
  totals: { weightBytes: number; execBytes: number; estimatedBytes: number; stateBytesPerSession: number };
}

function resolve(d: HymbaDims, o: PlanOptions, runTokens: number): Resolved {
  const budgetMb = o.budgetMb ?? DEFAULT_BUDGET_MB;
  if (!(budgetMb > 0)) throw new RangeError(`the budget must be positive, got ${budgetMb} MB`);
  if (!(runTokens >= 0)) throw new RangeError(`run tokens must not be negative, got ${runTokens}`);
  return {
    dtype: o.dtype,
    budgetBytes: budgetMb * MB,
    contextTokens: Math.min(o.contextTokens ?? maxContext(d), maxContext(d)),
    hotSessions: o.hotSessions ?? 1,
    factor: o.factor ?? ORT_FACTORS[o.dtype],
    baselineBytes: o.baselineBytes ?? ORT_BASELINE_BYTES,
    runTokens,
  };
}

function stagePlan(d: HymbaDims, s: StageSpec, r: Resolved, step = 0): StagePlan {
  const c = stageContent(d, s);
  const weightBytes = stageWeightBytes(d, s, r.dtype);
  const execBytes = stageWeightBytes(d, s, execDtype(r.dtype));
  const activation = contentActivationBytes(d, c, r.runTokens);
  const ortBytes = r.baselineBytes + r.factor * execBytes + activation;
  const stateBytesPerSession = contentStateBytes(d, c, r.contextTokens);
  const runStateBytes = RUN_STATE_COPIES * stateBytesPerSession;
  const estimatedBytes = ortBytes + runStateBytes + r.hotSessions * stateBytesPerSession;
  const contexts = [...new Set(REPORT_CONTEXTS.map((k) => Math.min(k, maxContext(d))))];
  // at each context: the sessions kept in memory, after the room a run at that context needs
  const fit = (state: number): number | null =>
    state === 0 ? null : Math.max(0, Math.floor((r.budgetBytes - ortBytes) / state - RUN_STATE_COPIES));
  return {
    ...s,
    weightBytes,
    execBytes,
    activationBytes: activation,
    ortBytes,
    runStateBytes,
    stateBytesPerSession,
    estimatedBytes,
    overBudget: estimatedBytes > r.budgetBytes,
    step,
    sessionsThatFit: contexts.map((context) => ({ context, sessions: fit(contentStateBytes(d, c, context)) })),
  };
}

const mb = (bytes: number): string => `${Math.round(bytes / MB)} MB`;
const unitText = (u: PlanUnit): string => (u.last - u.first === 1 ? `${u.first}` : `${u.first}-${u.last - 1}`);
const list = (xs: number[]): string => xs.join(', ');

/** "0-3", "1.mlp", "1.mlp, 2-3, 4.mixer": a sublayer range by whole layers where it can. */
function unitsText(from: number, to: number): string {
  const parts: string[] = [];
  let a = from;
  let b = to;
  if (a % 2 === 1 && a < b) {
    parts.push(`${(a - 1) / 2}.mlp`);
    a++;
  }
  const tail = b % 2 === 1 && b > a ? `${(b - 1) / 2}.mixer` : null;
  if (tail) b--;
  if (b > a) parts.push(unitText({ first: a / 2, last: b / 2 }));
  if (tail) parts.push(tail);
  return parts.join(', ');
}

/** "0-3 +embed +head", "2.mixer +embed", "5.mlp 2/3", "embed 1/2", "3.mixer mirrors 2" */
export function stageLabel(s: StageSpec): string {
  if (s.slice) {
    const part = `${s.slice.part + 1}/${s.slice.parts}`;
    return s.slice.kind === 'mlp' ? `${s.slice.layer}.mlp ${part}` : `${s.slice.kind} ${part}`;
  }
  const { from, to } = stageUnits(s);
  const body = to > from ? unitsText(from, to) : '';
  const extras = [s.embed ? '+embed' : '', s.head ? '+head' : ''].filter(Boolean).join(' ');
  const mirrors = s.kvIn && s.kvIn.length > 0 ? ` mirrors ${list(s.kvIn)}` : '';
  return `${[body, extras].filter(Boolean).join(' ')}${mirrors}`;
}

// ---------------------------------------------------------------- whole layers

/** One sentence for units over budget that need the same memory: "layers 1-2, 3-4 (KV groups) need ~428 MB each". */
function unitsSentence(units: PlanUnit[], need: number, r: Resolved): string {
  const grouped = units.some((u) => u.last - u.first > 1);
  const tail = `at ${r.dtype}: over the ${r.budgetBytes / MB} MB budget`;
  if (units.length === 1) {
    const what = grouped ? `layers ${unitText(units[0]!)} (one KV group) need` : `layer ${unitText(units[0]!)} needs`;
    return `${what} ~${mb(need)} ${tail}; it would need splitting into layer slices`;
  }
  const what = `layers ${units.map(unitText).join(', ')}${grouped ? ' (KV groups)' : ''}`;
  return `${what} need ~${mb(need)} each ${tail}; each would need splitting into layer slices`;
}

const embedAloneSpec = (): StageSpec => ({
  first: 0,
  last: 0,
  embed: false,
  head: false,
  slice: { kind: 'embed', part: 0, parts: 1 },
});
const headAloneSpec = (d: HymbaDims): StageSpec => ({
  first: d.L,
  last: d.L,
  embed: false,
  head: false,
  slice: { kind: 'head', part: 0, parts: 1 },
});

/** Sentences naming what cannot fit the budget even alone (whole layers), then any other over-budget stage. */
function layerProblems(d: HymbaDims, stages: StagePlan[], r: Resolved): string[] {
  const out: string[] = [];
  const budget = `over the ${r.budgetBytes / MB} MB budget`;
  const embedAlone = stagePlan(d, embedAloneSpec(), r).estimatedBytes;
  const headAlone = stagePlan(d, headAloneSpec(d), r).estimatedBytes;
  if (embedAlone > r.budgetBytes)
    out.push(
      `the embedding (${d.V} x ${d.H} table${d.M > 0 ? ` + ${d.M} meta tokens` : ''}) needs ~${mb(embedAlone)} at ${r.dtype}: ${budget}; it would need splitting into vocabulary slices`,
    );
  if (headAlone > r.budgetBytes)
    out.push(
      `the head (tied ${d.V} x ${d.H} table) needs ~${mb(headAlone)} at ${r.dtype}: ${budget}; it would need splitting into vocabulary slices`,
    );
  // units over budget on their own, grouped by what they need (a 1.5B model has many alike)
  const over = new Map<string, { need: number; units: PlanUnit[] }>();
  for (const u of atomicUnits(d)) {
    const need = stagePlan(d, { ...u, embed: false, head: false }, r).estimatedBytes;
    if (need <= r.budgetBytes) continue;
    const key = mb(need);
    const entry = over.get(key) ?? { need, units: [] };
    entry.units.push(u);
    over.set(key, entry);
  }
  for (const { need, units } of over.values()) out.push(unitsSentence(units, need, r));
  const overUnits = [...over.values()].flatMap((e) => e.units);
  for (const [k, s] of stages.entries()) {
    if (!s.overBudget) continue;
    const explained =
      (s.embed && embedAlone > r.budgetBytes) ||
      (s.head && headAlone > r.budgetBytes) ||
      overUnits.some((u) => u.first >= s.first && u.last <= s.last);
    if (!explained)
      out.push(
        `stage ${k} (${stageLabel(s)}) needs ~${mb(s.estimatedBytes)}: ${budget}; its parts fit alone but not together`,
      );
  }
  return out;
}

/** The largest stage any whole-layer plan needs: each unit alone, the first with the embedding, the last with the head. */
function layerMinBudgetBytes(d: HymbaDims, r: Resolved): number {
  const units = atomicUnits(d);
  return Math.max(
    ...units.map((u, k) => stagePlan(d, { ...u, embed: k === 0, head: k === units.length - 1 }, r).estimatedBytes),
  );
}

/**
 * Pack consecutive KV-group units greedily: a stage grows while its estimate stays within the budget. The
 * embedding rides on stage 0 and the head on the last stage; a unit that does not fit even alone gets a
 * stage of its own, marked over budget.
 */
function layerSpecs(d: HymbaDims, r: Resolved): StageSpec[] {
  const units = atomicUnits(d);
  const done: StageSpec[] = [];
  let cur: StageSpec | null = null;
  for (const [k, u] of units.entries()) {
    const head = k === units.length - 1;
    if (cur !== null) {
      const grown: StageSpec = { first: cur.first, last: u.last, embed: cur.embed, head };
      if (!stagePlan(d, grown, r).overBudget) {
        cur = grown;
        continue;
      }
      done.push(cur);
    }
    cur = { ...u, embed: done.length === 0, head };
  }
  done.push(cur!);
  return done;
}

// ---------------------------------------------------------------- sub-layer units

/** A unit of the sub-layer plan, in model order. */
type SubUnit = { kind: 'embed' } | { kind: 'mixer'; layer: number } | { kind: 'mlp'; layer: number } | { kind: 'head' };

function subUnits(d: HymbaDims): SubUnit[] {
  const out: SubUnit[] = [{ kind: 'embed' }];
  for (let i = 0; i < d.L; i++) out.push({ kind: 'mixer', layer: i }, { kind: 'mlp', layer: i });
  out.push({ kind: 'head' });
  return out;
}

/** A stage being packed: the whole embedding, sublayers [from, to), the whole head. */
interface Packing {
  embed: boolean;
  from: number;
  to: number;
  head: boolean;
}

/** The producers whose mixers run elsewhere while a consumer's runs in [from, to). */
function mirrored(d: HymbaDims, from: number, to: number): number[] {
  const out = new Set<number>();
  for (let u = from + (from % 2); u < to; u += 2) {
    const kv = d.layers[u / 2]!.kv;
    if (kv.kind === 'consumer' && !(2 * kv.producer >= from && 2 * kv.producer < to)) out.add(kv.producer);
  }
  return [...out].sort((a, b) => a - b);
}

function packedSpec(d: HymbaDims, p: Packing): StageSpec {
  if (p.to === p.from && !p.head) return embedAloneSpec();
  if (p.to === p.from && !p.embed) return headAloneSpec(d);
  const kvIn = mirrored(d, p.from, p.to);
  return {
    first: Math.floor(p.from / 2),
    last: Math.ceil(p.to / 2),
    embed: p.embed,
    head: p.head,
    units: { from: p.from, to: p.to },
    ...(kvIn.length > 0 ? { kvIn } : {}),
  };
}

function grow(p: Packing | null, u: SubUnit, at: number): Packing {
  const base = p ?? { embed: false, from: at, to: at, head: false };
  switch (u.kind) {
    case 'embed':
      return { ...base, embed: true };
    case 'head':
      return { ...base, head: true };
    default:
      return { ...base, to: at + 1 };
  }
}

/** The slices of an MLP block, the embedding or the head in `parts` parts. */
function sliceSpecs(d: HymbaDims, u: SubUnit, parts: number): StageSpec[] {
  return Array.from({ length: parts }, (_, part): StageSpec => {
    switch (u.kind) {
      case 'mlp':
        return {
          first: u.layer,
          last: u.layer + 1,
          embed: false,
          head: false,
          slice: { kind: 'mlp', layer: u.layer, part, parts },
        };
      case 'embed':
        return { first: 0, last: 0, embed: false, head: false, slice: { kind: 'embed', part, parts } };
      case 'head':
        return { first: d.L, last: d.L, embed: false, head: false, slice: { kind: 'head', part, parts } };
      case 'mixer':
        throw new Error('mixer blocks are not sliced');
    }
  });
}

/** The fewest slices of a unit that each fit (MAX_SLICES, over budget, when none does). */
function slicesThatFit(d: HymbaDims, u: SubUnit, r: Resolved): StageSpec[] {
  for (let parts = 2; parts <= MAX_SLICES; parts++) {
    const specs = sliceSpecs(d, u, parts);
    if (specs.every((s) => !stagePlan(d, s, r).overBudget)) return specs;
  }
  return sliceSpecs(d, u, MAX_SLICES);
}

/**
 * Pack consecutive sub-layer units greedily (embedding, then mixer and MLP of each layer, then head): a stage
 * grows while its estimate, mirrors included, stays within the budget. A unit that does not fit alone is
 * sliced (MLP by intermediate columns, embedding and head by vocabulary rows) into the fewest parts that
 * fit; a mixer that does not fit alone gets a stage of its own, over budget.
 */
function unitSpecs(d: HymbaDims, r: Resolved): StageSpec[] {
  const done: StageSpec[] = [];
  let cur: Packing | null = null;
  const fits = (p: Packing): boolean => !stagePlan(d, packedSpec(d, p), r).overBudget;
  let at = 0; // the sublayer the next mixer or MLP unit is
  for (const u of subUnits(d)) {
    if (cur !== null) {
      const grown = grow(cur, u, at);
      if (fits(grown)) {
        cur = grown;
        if (u.kind === 'mixer' || u.kind === 'mlp') at++;
        continue;
      }
      done.push(packedSpec(d, cur));
      cur = null;
    }
    const alone = grow(null, u, at);
    if (u.kind === 'mixer' || u.kind === 'mlp') at++;
    if (fits(alone) || u.kind === 'mixer') {
      cur = alone;
      if (!fits(alone)) {
        done.push(packedSpec(d, alone));
        cur = null;
      }
      continue;
    }
    done.push(...slicesThatFit(d, u, r));
  }
  if (cur !== null) done.push(packedSpec(d, cur));
  // who sends K/V rows to a mirror
  for (const s of done)
    for (const p of s.kvIn ?? []) {
      const src = done.find((t) => !t.slice && stageUnits(t).from <= 2 * p && 2 * p < stageUnits(t).to)!;
      src.kvOut = [...new Set([...(src.kvOut ?? []), p])].sort((a, b) => a - b);
    }
  return done;
}

const sliceKey = (s: StageSpec): string | null =>
  s.slice ? `${s.slice.kind}:${s.slice.kind === 'mlp' ? s.slice.layer : ''}:${s.slice.parts}` : null;

/** Sentences for a sub-layer plan: mixers over budget (grouped), slices that do not fit, anything else. */
function unitProblems(d: HymbaDims, stages: StagePlan[], r: Resolved): string[] {
  const out: string[] = [];
  const budget = `over the ${r.budgetBytes / MB} MB budget`;
  const over = new Map<string, { need: number; state: number; layers: number[] }>();
  const done = new Set<string>();
  for (const [k, s] of stages.entries()) {
    if (!s.overBudget) continue;
    const c = stageContent(d, s);
    if (!s.slice && c.mixers.length === 1 && c.mlps.length === 0 && c.embedRows === 0 && c.headRows === 0) {
      const key = mb(s.estimatedBytes);
      const entry = over.get(key) ?? { need: s.estimatedBytes, state: s.stateBytesPerSession, layers: [] };
      entry.layers.push(c.mixers[0]!);
      over.set(key, entry);
    } else if (s.slice) {
      const key = sliceKey(s)!;
      if (done.has(key)) continue;
      done.add(key);
      const what =
        s.slice.kind === 'mlp'
          ? `the MLP of layer ${s.slice.layer}`
          : `the ${s.slice.kind === 'embed' ? 'embedding' : 'head'}`;
      out.push(`${what} does not fit even in ${s.slice.parts} slices (~${mb(s.estimatedBytes)} each): ${budget}`);
    } else
      out.push(
        `stage ${k} (${stageLabel(s)}) needs ~${mb(s.estimatedBytes)}: ${budget}; its parts fit alone but not together`,
      );
  }
  for (const { need, state, layers } of over.values()) {
    const what =
      layers.length === 1 ? `the mixer of layer ${layers[0]} needs` : `the mixers of layers ${list(layers)} need`;
    const each = layers.length === 1 ? '' : ' each';
    out.push(
      `${what} ~${mb(need)}${each} at ${r.dtype} (of which ${mb((RUN_STATE_COPIES + r.hotSessions) * state)} session state at ${r.contextTokens} tokens): ${budget}; mixer blocks are not sliced (attention heads and SSM channels could be)`,
    );
  }
  return out;
}

/** The smallest budget at which every sub-layer stage can fit: the largest mixer alone (with its mirror), or the thinnest slice. */
function unitMinBudgetBytes(d: HymbaDims, r: Resolved): number {
  let need = 0;
  for (let i = 0; i < d.L; i++)
    need = Math.max(
      need,
      stagePlan(d, packedSpec(d, grow(null, { kind: 'mixer', layer: i }, 2 * i)), r).estimatedBytes,
    );
  const thinnest: SubUnit[] = [
    { kind: 'embed' },
    { kind: 'head' },
    ...Array.from({ length: d.L }, (_, layer): SubUnit => ({ kind: 'mlp', layer })),
  ];
  for (const u of thinnest)
    for (const s of sliceSpecs(d, u, MAX_SLICES)) need = Math.max(need, stagePlan(d, s, r).estimatedBytes);
  return need;
}

// ---------------------------------------------------------------- plans

/** Steps: consecutive sibling slices share one. */
function withSteps(d: HymbaDims, specs: StageSpec[], r: Resolved): StagePlan[] {
  let step = -1;
  let prev: string | null = null;
  return specs.map((s) => {
    const key = sliceKey(s);
    if (key === null || key !== prev || s.slice!.part === 0) step++;
    prev = key;
    return stagePlan(d, s, r, step);
  });
}

function finish(d: HymbaDims, specs: StageSpec[], r: Resolved, granularity: 'layers' | 'units'): ModelPlan {
  const stages = withSteps(d, specs, r);
  const sum = (f: (s: StagePlan) => number): number => stages.reduce((n, s) => n + f(s), 0);
  const sub = granularity === 'units' || specs.some((s) => s.units !== undefined || s.slice !== undefined);
  return {
    dtype: r.dtype,
    budgetMb: r.budgetBytes / MB,
    contextTokens: r.contextTokens,
    hotSessions: r.hotSessions,
    factor: r.factor,
    baselineBytes: r.baselineBytes,
    runTokens: r.runTokens,
    activationBytes: activationBytes(d, r.runTokens),
    granularity: sub ? 'units' : 'layers',
    stages,
    specs,
    steps: stages.length === 0 ? 0 : stages.at(-1)!.step + 1,
    hops: stages.length,
    problems: sub ? unitProblems(d, stages, r) : layerProblems(d, stages, r),
    minBudgetMb: Math.ceil((sub ? unitMinBudgetBytes(d, r) : layerMinBudgetBytes(d, r)) / MB),
    fits: stages.every((s) => !s.overBudget),
    totals: {
      weightBytes: sum((s) => s.weightBytes),
      execBytes: sum((s) => s.execBytes),
      estimatedBytes: sum((s) => s.estimatedBytes),
      stateBytesPerSession: sum((s) => s.stateBytesPerSession),
    },
  };
}

function planAt(d: HymbaDims, opts: PlanOptions, runTokens: number): ModelPlan {
  const r = resolve(d, opts, runTokens);
  const layers = finish(d, layerSpecs(d, r), r, 'layers');
  if (layers.fits || opts.granularity === 'layers') return layers;
  return finish(d, unitSpecs(d, r), r, 'units');
}

/**
 * The plan: whole layers (KV groups kept whole) when they fit, else sub-layer units with slices and mirrors.
 * Without `runTokens`, the largest of RUN_TOKEN_CHOICES whose plan fits (the smallest's plan when none does).
 */
export function planStages(d: HymbaDims, opts: PlanOptions): ModelPlan {
  const choices = opts.runTokens !== undefined ? [opts.runTokens] : RUN_TOKEN_CHOICES;
  let plan: ModelPlan | null = null;
  for (const t of choices) {
    plan = planAt(d, opts, t);
    if (plan.fits) return plan;
  }
  return plan!;
}

/**
 * The longest context (text tokens) at which planStages with these options fits, or 0 when none does. A
 * binary search: the state grows with the context, so a plan that fits at N fits below it.
 */
export function maxContextThatFits(d: HymbaDims, opts: PlanOptions): number {
  const fitsAt = (c: number): boolean => planStages(d, { ...opts, contextTokens: c }).fits;
  let [lo, hi] = [0, maxContext(d)];
  if (fitsAt(hi)) return hi;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fitsAt(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** The same estimates for stages chosen elsewhere (a converted model's manifest). */
export function estimateStages(d: HymbaDims, specs: StageSpec[], opts: PlanOptions): ModelPlan {
  const r = resolve(d, opts, opts.runTokens ?? DEFAULT_MAX_RUN_TOKENS);
  const clean = specs.map(({ first, last, embed, head, units, slice, kvIn, kvOut }) => ({
    first,
    last,
    embed,
    head,
    ...(units ? { units } : {}),
    ...(slice ? { slice } : {}),
    ...(kvIn ? { kvIn } : {}),
    ...(kvOut ? { kvOut } : {}),
  }));
  return finish(d, clean, r, 'layers');
}
