// The stage planner: which consecutive layers run together in one Durable Object, so that each stage fits
// its isolate's memory budget. Pure arithmetic over the config (no weights, no Node APIs): the CLI
// (`hymba plan`, `hymba convert --budget-mb`) and the benchmarks share it.
//
// Estimated memory of a stage = ORT baseline + ORT factor x weight bytes as executed + activation peak of
//                               one run + (state copies a run makes + hot sessions) x state per session.
// Weight bytes are counted exactly as the converter stores them (emit.ts weightBytes); the other terms are
// measured constants (docs/stages.md), replaceable by `hymba plan --measure`.

import type { HymbaDims } from './config.js';
import { DEFAULT_MAX_RUN_TOKENS, type StageSpec } from './onnx/hymba-graph.js';
import { Q4_BLOCK, type ModelDtype } from './quantize.js';
import { kvEntries } from './state.js';
import { inProjRows } from './weights.js';

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
 * 16 bytes per element) and of a two-layer int8 stage by 61 MB (9.4 bytes); the larger is kept.
 */
export const ACTIVATION_BYTES_PER_SCAN_ELEMENT = 16;

/**
 * Copies of one session's state a run holds in the WASM heap: the inputs copied in, the K/V with the new
 * entries appended, and its transposes. A decode step at 8184 tokens grew the tiny int8 model's heap by
 * 1.1x-2.3x its state (`hymba plan --measure`, before and after the batched graph layout); the estimate counts the worst run, a full-length run late in
 * the longest conversation, so this adds to the activation peak.
 */
export const RUN_STATE_COPIES = 2.5;

/** Context lengths (text tokens) at which the plan reports how many sessions' state fit beside the weights. */
export const REPORT_CONTEXTS = [1024, 4096, 8192] as const;

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

/** The large matrices of one layer as the graph stores them: gate and up are fused into one [2I, H]. */
function layerMatrices(d: HymbaDims, i: number): [number, number][] {
  return [
    [inProjRows(d, i), d.H],
    [d.dtRank + 2 * d.dState, d.dIn], // x_proj
    [d.dIn, d.dtRank], // dt_proj
    [d.H, d.dIn], // out_proj
    [2 * d.I, d.H], // gate_up
    [d.H, d.I], // down
  ];
}

/** fp32 values of one layer that stay fp32 in every dtype: norms, conv, biases, A, D. */
function layerFp32Values(d: HymbaDims): number {
  const norms = 2 * d.H + d.dtRank + 2 * d.dState + 2 * d.dIn; // input, pre_moe, dt, B, C, pre_avg 1 and 2
  return norms + d.dIn * d.dConv + d.dIn + d.dIn + d.dIn * d.dState + d.dIn; // conv w, conv b, dt bias, A, D
}

/** Weight bytes of layer i as stored in a stage graph. */
export function layerWeightBytes(d: HymbaDims, i: number, dtype: ModelDtype): number {
  const matrices = layerMatrices(d, i).reduce((n, [r, c]) => n + matrixBytes(r, c, dtype), 0);
  return matrices + layerFp32Values(d) * 4;
}

/** The embedding's own bytes: the tied token table and the meta tokens (16-bit in f16 models, else fp32). */
export function embedWeightBytes(d: HymbaDims, dtype: ModelDtype): number {
  return matrixBytes(d.V, d.H, dtype) + d.M * d.H * (dtype === 'f16' ? 2 : 4);
}

/** The head's own bytes: the final norm and the tied table (stored once when the embedding is in the stage). */
export function headWeightBytes(d: HymbaDims, dtype: ModelDtype): number {
  return d.H * 4 + matrixBytes(d.V, d.H, dtype);
}

/**
 * Weight bytes of a stage graph exactly as the converter records them (manifest `weightBytes`): its
 * layers, the embedding and/or head, the RoPE table every stage carries, and the 1-byte uint8 constants the
 * quantised matmuls store as initializers (128 for the int8 activation zero point; 15 and 4 for q4 nibbles).
 */
export function stageWeightBytes(d: HymbaDims, s: StageSpec, dtype: ModelDtype): number {
  let n = (d.dqk / 2) * 4; // rope.inv_freq
  for (let i = s.first; i < s.last; i++) n += layerWeightBytes(d, i, dtype);
  if (s.embed) n += embedWeightBytes(d, dtype);
  if (s.head) n += headWeightBytes(d, dtype) - (s.embed ? matrixBytes(d.V, d.H, dtype) : 0);
  if (dtype === 'int8') n += 1;
  if (dtype === 'q4') n += 3;
  return n;
}

/** The format ORT runs: q4 is expanded to int8 on load; the others run as stored (f16 is widened inside). */
export const execDtype = (dtype: ModelDtype): ModelDtype => (dtype === 'q4' ? 'int8' : dtype);

// ---------------------------------------------------------------- session state

/** In-memory (fp32) state of layer i after `tokens` text tokens: conv, SSM, and a producer's K/V. */
export function layerStateBytes(d: HymbaDims, i: number, tokens: number): number {
  const conv = (d.dConv - 1) * d.dIn;
  const ssm = d.dIn * d.dState;
  const producer = d.layers[i]!.kv.kind === 'producer';
  const kv = producer ? kvEntries(d, i, d.M + tokens) * d.kvHeads * (d.dqk + d.dv) : 0;
  return (conv + ssm + kv) * 4;
}

export function stageStateBytes(d: HymbaDims, first: number, last: number, tokens: number): number {
  let n = 0;
  for (let i = first; i < last; i++) n += layerStateBytes(d, i, tokens);
  return n;
}

/** The longest conversation a session may hold, in text tokens (positions count the meta tokens). */
export const maxContext = (d: HymbaDims): number => Math.max(1, d.maxPositions - d.M);

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
  /** tokens per graph run, which sets the activation peak (default the converter's DEFAULT_MAX_RUN_TOKENS) */
  runTokens?: number;
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
  /** baseline + factor x execBytes + activation peak: the stage before any session state */
  ortBytes: number;
  /** what a run at the plan's context adds: RUN_STATE_COPIES x stateBytesPerSession */
  runStateBytes: number;
  /** fp32 state of this stage's layers for one session at the plan's context */
  stateBytesPerSession: number;
  /** ortBytes + runStateBytes + hot sessions x stateBytesPerSession */
  estimatedBytes: number;
  overBudget: boolean;
  /** how many sessions' state fit beside the weights, at the REPORT_CONTEXTS (clamped to the model's) */
  sessionsThatFit: { context: number; sessions: number }[];
}

export interface ModelPlan {
  dtype: ModelDtype;
  budgetMb: number;
  contextTokens: number;
  hotSessions: number;
  factor: number;
  baselineBytes: number;
  /** tokens per graph run the activation estimate assumes */
  runTokens: number;
  activationBytes: number;
  stages: StagePlan[];
  /** why stages are over budget, one sentence each (empty when every stage fits) */
  problems: string[];
  /** the smallest budget (MB) at which every stage of a plan could fit: the largest unit with what must ride along */
  minBudgetMb: number;
  fits: boolean;
  totals: { weightBytes: number; execBytes: number; estimatedBytes: number; stateBytesPerSession: number };
}

function resolve(d: HymbaDims, o: PlanOptions): Resolved {
  const budgetMb = o.budgetMb ?? DEFAULT_BUDGET_MB;
  if (!(budgetMb > 0)) throw new RangeError(`the budget must be positive, got ${budgetMb} MB`);
  return {
    dtype: o.dtype,
    budgetBytes: budgetMb * MB,
    contextTokens: Math.min(o.contextTokens ?? maxContext(d), maxContext(d)),
    hotSessions: o.hotSessions ?? 1,
    factor: o.factor ?? ORT_FACTORS[o.dtype],
    baselineBytes: o.baselineBytes ?? ORT_BASELINE_BYTES,
    runTokens: o.runTokens ?? DEFAULT_MAX_RUN_TOKENS,
  };
}

/** Activation peak of one run of `runTokens` tokens (the scan's [T, d_in, N] intermediates). */
export const activationBytes = (d: HymbaDims, runTokens: number): number =>
  ACTIVATION_BYTES_PER_SCAN_ELEMENT * runTokens * d.dIn * d.dState;

function stagePlan(d: HymbaDims, s: StageSpec, r: Resolved): StagePlan {
  const weightBytes = stageWeightBytes(d, s, r.dtype);
  const execBytes = stageWeightBytes(d, s, execDtype(r.dtype));
  const ortBytes = r.baselineBytes + r.factor * execBytes + activationBytes(d, r.runTokens);
  const stateBytesPerSession = stageStateBytes(d, s.first, s.last, r.contextTokens);
  const runStateBytes = RUN_STATE_COPIES * stateBytesPerSession;
  const estimatedBytes = ortBytes + runStateBytes + r.hotSessions * stateBytesPerSession;
  const contexts = [...new Set(REPORT_CONTEXTS.map((c) => Math.min(c, maxContext(d))))];
  // at each context: the sessions kept in memory, after the room a run at that context needs
  const fit = (state: number): number => Math.max(0, Math.floor((r.budgetBytes - ortBytes) / state - RUN_STATE_COPIES));
  return {
    ...s,
    weightBytes,
    execBytes,
    ortBytes,
    runStateBytes,
    stateBytesPerSession,
    estimatedBytes,
    overBudget: estimatedBytes > r.budgetBytes,
    sessionsThatFit: contexts.map((context) => ({
      context,
      sessions: fit(stageStateBytes(d, s.first, s.last, context)),
    })),
  };
}

const mb = (bytes: number): string => `${Math.round(bytes / MB)} MB`;
const unitText = (u: PlanUnit): string => (u.last - u.first === 1 ? `${u.first}` : `${u.first}-${u.last - 1}`);

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

/** Sentences naming what cannot fit the budget even alone, then any other over-budget stage. */
function problems(d: HymbaDims, stages: StagePlan[], r: Resolved): string[] {
  const out: string[] = [];
  const budget = `over the ${r.budgetBytes / MB} MB budget`;
  const embedAlone = r.baselineBytes + r.factor * embedWeightBytes(d, execDtype(r.dtype));
  const headAlone = r.baselineBytes + r.factor * headWeightBytes(d, execDtype(r.dtype));
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

/** The largest stage any plan needs: each unit alone, the first with the embedding, the last with the head. */
function minBudgetBytes(d: HymbaDims, r: Resolved): number {
  const units = atomicUnits(d);
  return Math.max(
    ...units.map((u, k) => stagePlan(d, { ...u, embed: k === 0, head: k === units.length - 1 }, r).estimatedBytes),
  );
}

/** "0-3 +embed +head" */
export function stageLabel(s: StageSpec): string {
  const layers = s.last - s.first === 1 ? `${s.first}` : `${s.first}-${s.last - 1}`;
  return `${layers}${s.embed ? ' +embed' : ''}${s.head ? ' +head' : ''}`;
}

function finish(d: HymbaDims, stages: StagePlan[], r: Resolved): ModelPlan {
  const sum = (f: (s: StagePlan) => number): number => stages.reduce((n, s) => n + f(s), 0);
  const issues = problems(d, stages, r);
  return {
    dtype: r.dtype,
    budgetMb: r.budgetBytes / MB,
    contextTokens: r.contextTokens,
    hotSessions: r.hotSessions,
    factor: r.factor,
    baselineBytes: r.baselineBytes,
    runTokens: r.runTokens,
    activationBytes: activationBytes(d, r.runTokens),
    stages,
    problems: issues,
    minBudgetMb: Math.ceil(minBudgetBytes(d, r) / MB),
    fits: stages.every((s) => !s.overBudget),
    totals: {
      weightBytes: sum((s) => s.weightBytes),
      execBytes: sum((s) => s.execBytes),
      estimatedBytes: sum((s) => s.estimatedBytes),
      stateBytesPerSession: sum((s) => s.stateBytesPerSession),
    },
  };
}

/**
 * Pack consecutive units greedily: a stage grows while its estimate stays within the budget. The embedding
 * rides on stage 0 and the head on the last stage; a unit that does not fit even alone gets a stage of its
 * own, marked over budget, and is named in `problems`.
 */
export function planStages(d: HymbaDims, opts: PlanOptions): ModelPlan {
  const r = resolve(d, opts);
  const units = atomicUnits(d);
  const done: StagePlan[] = [];
  let cur: StagePlan | null = null;
  for (const [k, u] of units.entries()) {
    const head = k === units.length - 1;
    if (cur !== null) {
      const grown = stagePlan(d, { first: cur.first, last: u.last, embed: cur.embed, head }, r);
      if (!grown.overBudget) {
        cur = grown;
        continue;
      }
      done.push(cur);
    }
    cur = stagePlan(d, { ...u, embed: done.length === 0, head }, r);
  }
  done.push(cur!);
  return finish(d, done, r);
}

/** The same estimates for stage ranges chosen elsewhere (a converted model's manifest). */
export function estimateStages(d: HymbaDims, ranges: StageSpec[], opts: PlanOptions): ModelPlan {
  const r = resolve(d, opts);
  return finish(
    d,
    ranges.map((s) => stagePlan(d, s, r)),
    r,
  );
}
